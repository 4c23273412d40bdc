//! The job of a routing request: one decoder for the HTTP API, the CLI and case files.

use super::values::{Days, Items, PrNumber};
use rollout_policy::{Job, TriggerSource};
use serde::{Deserialize, Deserializer};

/// Most PR numbers in one job.
pub const MAX_PR_NUMBERS: usize = 10_000;

/// A job as JSON gives it: every field optional, unknown fields refused, a zero is a value
/// (SPEC §2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    /// Free-text kind of job.
    #[serde(default)]
    pub job_type: Option<String>,
    /// Days of data the job covers.
    #[serde(default)]
    pub time_range_days: Option<Days>,
    /// Pull request numbers (at most [`MAX_PR_NUMBERS`]; empty counts as absent).
    #[serde(default, deserialize_with = "pr_numbers")]
    pub pr_numbers: Option<Vec<PrNumber>>,
    /// Who started the job: `manual`, `scheduled` or `automatic`.
    #[serde(default, deserialize_with = "trigger_source")]
    pub trigger_source: Option<TriggerSource>,
    /// Most items the job may process.
    #[serde(default)]
    pub max_items: Option<Items>,
}

impl JobInput {
    /// The job as the rules take it.
    pub fn into_job(self) -> Job {
        Job {
            job_type: self.job_type,
            time_range_days: self.time_range_days.map(Days::get),
            pr_numbers: self.pr_numbers.map(|v| v.into_iter().map(PrNumber::get).collect()).unwrap_or_default(),
            trigger_source: self.trigger_source,
            max_items: self.max_items.map(Items::get),
        }
    }
}

impl From<JobInput> for Job {
    fn from(j: JobInput) -> Job {
        j.into_job()
    }
}

fn trigger_source<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TriggerSource>, D::Error> {
    let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
    s.map(|s| {
        TriggerSource::parse(&s).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown trigger source `{}`: allowed values are manual, scheduled, automatic",
                super::clip(&s)
            ))
        })
    })
    .transpose()
}

fn pr_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PrNumber>>, D::Error> {
    let v = Option::<Vec<PrNumber>>::deserialize(d)?;
    if let Some(list) = &v {
        if list.len() > MAX_PR_NUMBERS {
            return Err(serde::de::Error::custom(format!(
                "{} PR numbers: allowed at most {MAX_PR_NUMBERS}",
                list.len()
            )));
        }
    }
    Ok(v)
}

/// The job as JSON, in [`JobInput`]'s field names, absent fields left out (an empty
/// `pr_numbers` is absent): what the decision log keeps, and what [`JobInput`] reads back
/// into the same [`Job`].
pub fn job_to_json(job: &Job) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    if let Some(t) = &job.job_type {
        o.insert("job_type".into(), t.clone().into());
    }
    if let Some(d) = job.time_range_days {
        o.insert("time_range_days".into(), d.into());
    }
    if !job.pr_numbers.is_empty() {
        o.insert("pr_numbers".into(), job.pr_numbers.clone().into());
    }
    if let Some(t) = job.trigger_source {
        o.insert("trigger_source".into(), t.as_str().into());
    }
    if let Some(m) = job.max_items {
        o.insert("max_items".into(), m.into());
    }
    serde_json::Value::Object(o)
}

/// `job` as the JSON [`job_to_json`] makes of it, serialised straight from the job (no
/// [`serde_json::Value`] built: the decision log encodes one per logged route decision).
#[derive(Debug, Clone, Copy)]
pub struct JobJson<'a>(pub &'a Job);

impl serde::Serialize for JobJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let job = self.0;
        let mut map = serializer.serialize_map(None)?;
        if let Some(t) = &job.job_type {
            map.serialize_entry("job_type", t)?;
        }
        if let Some(d) = job.time_range_days {
            map.serialize_entry("time_range_days", &d)?;
        }
        if !job.pr_numbers.is_empty() {
            map.serialize_entry("pr_numbers", &job.pr_numbers)?;
        }
        if let Some(t) = job.trigger_source {
            map.serialize_entry("trigger_source", t.as_str())?;
        }
        if let Some(m) = job.max_items {
            map.serialize_entry("max_items", &m)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::super::from_json;
    use super::*;

    #[test]
    fn a_job_survives_json() {
        let jobs = [
            Job::default(),
            Job {
                job_type: Some("backfill".into()),
                time_range_days: Some(0),
                pr_numbers: vec![1, 2, 3],
                trigger_source: Some(TriggerSource::Scheduled),
                max_items: Some(500),
            },
        ];
        for job in jobs {
            let back: JobInput = serde_json::from_value(job_to_json(&job)).expect("reads back");
            assert_eq!(back.into_job(), job);
            // serialised straight from the job: the same JSON
            let direct: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&JobJson(&job)).expect("serialised")).expect("JSON");
            assert_eq!(direct, job_to_json(&job));
        }
    }

    #[test]
    fn jobs_decode_and_name_bad_fields() {
        let j: JobInput =
            from_json(br#"{"time_range_days": 0, "pr_numbers": [1, 2], "trigger_source": "manual"}"#).unwrap();
        let j = j.into_job();
        assert_eq!(j.time_range_days, Some(0));
        assert_eq!(j.pr_numbers, vec![1, 2]);
        assert_eq!(j.trigger_source, Some(TriggerSource::Manual));

        let e = from_json::<JobInput>(br#"{"trigger_source": "cron"}"#).unwrap_err();
        assert_eq!(e.field, "trigger_source");
        assert!(e.message.contains("manual, scheduled, automatic"), "{e}");
        let e = from_json::<JobInput>(br#"{"max_items": -1}"#).unwrap_err();
        assert_eq!(e.field, "max_items");
        let e = from_json::<JobInput>(br#"{"time_range_days": 1.5}"#).unwrap_err();
        assert!(e.message.contains("integer"), "{e}");
        let e = from_json::<JobInput>(br#"{"pr_numbers": [1, "x"]}"#).unwrap_err();
        assert_eq!(e.field, "pr_numbers[1]");
        let e = from_json::<JobInput>(br#"{"colour": "red"}"#).unwrap_err();
        assert_eq!(e.field, "colour");
        assert!(e.message.contains("allowed fields are job_type, time_range_days"), "{e}");
        let many = format!("{{\"pr_numbers\": [{}]}}", vec!["1"; MAX_PR_NUMBERS + 1].join(","));
        let e = from_json::<JobInput>(many.as_bytes()).unwrap_err();
        assert_eq!(e.field, "pr_numbers");
        let nulls: JobInput = from_json(br#"{"trigger_source": null, "pr_numbers": null}"#).unwrap();
        assert_eq!(nulls, JobInput::default());
    }
}
