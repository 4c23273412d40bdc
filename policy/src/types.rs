//! The domain types of the rules, mirroring the WIT package `rollout:policy` one to one.

use std::fmt;

/// Declares a fieldless enum with its snake_case names (the names of SPEC and the case
/// files), `ALL`, `as_str`, `parse` and `Display`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The snake_case name used by SPEC, the case files and the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parse a snake_case name; the error names the allowed values.
            pub fn parse(s: &str) -> Result<Self, $crate::UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::UnknownName { what: $what, given: s.to_owned(), allowed: &[$($text),+] }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A name that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What was being parsed (`trigger source`, `strategy`, …).
    pub what: &'static str,
    /// The text given.
    pub given: String,
    /// The allowed names.
    pub allowed: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`: allowed values are {}", self.what, self.given, self.allowed.join(", "))
    }
}

impl std::error::Error for UnknownName {}

named_enum!(
    /// How the rollout chooses repositories beyond the target list.
    Strategy, "rollout strategy" {
        /// Hash bucket below the percentage.
        Percentage = "percentage",
        /// Target list only.
        Whitelist = "whitelist",
        /// Categories admitted in order of size.
        RepositorySize = "repository_size",
    }
);

named_enum!(
    /// Size category of a repository.
    Category, "category" {
        /// A test repository.
        Test = "test",
        /// A small repository.
        Small = "small",
        /// A medium repository.
        Medium = "medium",
        /// A large repository.
        Large = "large",
        /// An enterprise repository.
        Enterprise = "enterprise",
    }
);

impl Category {
    /// The percentage from which the `repository_size` strategy admits this category.
    pub fn threshold(self) -> u8 {
        match self {
            Category::Test => 10,
            Category::Small => 25,
            Category::Medium => 50,
            Category::Large => 75,
            Category::Enterprise => 100,
        }
    }

    /// Rollout priority of the category (higher first).
    pub fn priority_level(self) -> u8 {
        match self {
            Category::Test => 100,
            Category::Small => 80,
            Category::Medium => 60,
            Category::Large => 40,
            Category::Enterprise => 20,
        }
    }
}

named_enum!(
    /// Who or what started a job.
    TriggerSource, "trigger source" {
        /// A person.
        Manual = "manual",
        /// A scheduler.
        Scheduled = "scheduled",
        /// The system, reacting to an event.
        Automatic = "automatic",
    }
);

named_enum!(
    /// Where a job runs.
    Processor, "processor" {
        /// The low-latency queue; the default and the fallback.
        Inngest = "inngest",
        /// The bulk processor.
        GithubActions = "github_actions",
    }
);

named_enum!(
    /// Why a repository is or is not eligible (SPEC §2.2).
    EligibilityReason, "eligibility reason" {
        /// The emergency stop is on.
        EmergencyStop = "emergency_stop",
        /// The rollout is not active.
        Inactive = "inactive",
        /// The repository is excluded.
        Excluded = "excluded",
        /// The repository is targeted.
        Targeted = "targeted",
        /// Whitelist strategy, not targeted.
        NotTargeted = "not_targeted",
        /// Bucket below the percentage.
        InPercentage = "in_percentage",
        /// Bucket not below the percentage.
        OutsidePercentage = "outside_percentage",
        /// Size strategy, no category.
        Uncategorized = "uncategorized",
        /// Size strategy, threshold reached.
        CategoryIncluded = "category_included",
        /// Size strategy, threshold not reached.
        CategoryExcluded = "category_excluded",
        /// The host could not get a decision from the policy (never returned by a policy).
        PolicyError = "policy_error",
    }
);

named_enum!(
    /// The routing rule that chose the processor (SPEC §2.3).
    RouteRule, "route rule" {
        /// Not eligible: the old path.
        NotEligible = "not_eligible",
        /// At most one day of data.
        RecentData = "recent_data",
        /// 1..=10 pull requests.
        SmallPrBatch = "small_pr_batch",
        /// A person waits for a small batch.
        ManualSmallBatch = "manual_small_batch",
        /// More than one day of data.
        HistoricalRange = "historical_range",
        /// More than 50 items.
        LargeBatch = "large_batch",
        /// A scheduled job.
        ScheduledBulk = "scheduled_bulk",
        /// No rule matched.
        Default = "default",
        /// The host could not get a decision from the policy (never returned by a policy).
        PolicyError = "policy_error",
    }
);

named_enum!(
    /// How healthy the rollout is.
    HealthLevel, "health level" {
        /// Error rate at most 2.5 %.
        Ok = "ok",
        /// Error rate above 2.5 %.
        Warning = "warning",
        /// Error rate above 10 %.
        Critical = "critical",
    }
);

named_enum!(
    /// What to do about the rollout's health.
    HealthAction, "health action" {
        /// Nothing.
        None = "none",
        /// Set the percentage to 0.
        Rollback = "rollback",
    }
);

/// Default feature name of the seed.
pub const DEFAULT_FEATURE: &str = "hybrid_progressive_capture";

/// The configuration of one rollout: the columns of `rollout_configuration` the rules
/// read, plus `min_jobs_for_rollback`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The feature; part of the hash input.
    pub feature_name: String,
    /// 0..=100.
    pub rollout_percentage: u8,
    /// An inactive rollout admits nobody.
    pub is_active: bool,
    /// Always admitted unless excluded or stopped.
    pub target_repositories: Vec<String>,
    /// Never admitted.
    pub excluded_repositories: Vec<String>,
    /// How repositories are chosen.
    pub rollout_strategy: Strategy,
    /// Error rate (percent) above which the rollout is rolled back.
    pub max_error_rate: f64,
    /// Health window in hours.
    pub monitoring_window_hours: u32,
    /// Whether the health check may roll back by itself.
    pub auto_rollback_enabled: bool,
    /// A stopped rollout admits nobody.
    pub emergency_stop: bool,
    /// Fewest jobs in the window before a rollback may be decided.
    pub min_jobs_for_rollback: u32,
}

impl Default for Config {
    /// The seed's defaults: 0 %, inactive, percentage strategy, 5 % error rate, 24 h
    /// window, auto-rollback on, no stop, 10 jobs minimum.
    fn default() -> Self {
        Config {
            feature_name: DEFAULT_FEATURE.to_owned(),
            rollout_percentage: 0,
            is_active: false,
            target_repositories: Vec::new(),
            excluded_repositories: Vec::new(),
            rollout_strategy: Strategy::Percentage,
            max_error_rate: 5.0,
            monitoring_window_hours: 24,
            auto_rollback_enabled: true,
            emergency_stop: false,
            min_jobs_for_rollback: 10,
        }
    }
}

/// A configuration the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Check the configuration: percentage 0..=100, error rate a finite 0..=100, a
    /// non-empty feature name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rollout_percentage > 100 {
            return Err(ConfigError {
                field: "rollout_percentage".into(),
                message: format!("`{}` is out of range: allowed 0..=100", self.rollout_percentage),
            });
        }
        if !self.max_error_rate.is_finite() || !(0.0..=100.0).contains(&self.max_error_rate) {
            return Err(ConfigError {
                field: "max_error_rate".into(),
                message: "out of range: allowed a number from 0 to 100".to_owned(),
            });
        }
        if self.feature_name.is_empty() {
            return Err(ConfigError { field: "feature_name".into(), message: "must not be empty".into() });
        }
        Ok(())
    }
}

/// A repository as eligibility sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its identifier.
    pub id: crate::RepoId,
    /// Its category, when categorised.
    pub category: Option<Category>,
}

impl Repository {
    /// A repository from id text (canonicalised with [`crate::RepoId::parse`]).
    pub fn parse(id: &str, category: Option<Category>) -> Repository {
        Repository { id: crate::RepoId::parse(id), category }
    }
}

/// A job to route. A zero is a value; an empty `pr_numbers` counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    /// Free-text kind of job.
    pub job_type: Option<String>,
    /// Days of data the job covers.
    pub time_range_days: Option<u32>,
    /// Pull request numbers.
    pub pr_numbers: Vec<u64>,
    /// Who started the job.
    pub trigger_source: Option<TriggerSource>,
    /// Most items the job may process.
    pub max_items: Option<u32>,
}

/// An eligibility decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The rule that decided.
    pub reason: EligibilityReason,
    /// The repository's bucket, 0..=99.
    pub bucket: u8,
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    /// Where the job runs.
    pub processor: Processor,
    /// The rule that chose it.
    pub rule: RouteRule,
    /// The eligibility it rests on.
    pub eligibility: Eligibility,
}

/// Activity numbers of a repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepositoryStats {
    /// Stars.
    pub star_count: u32,
    /// Contributors.
    pub contributor_count: u32,
    /// Pull requests.
    pub pr_count: u32,
}

/// A categorisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Categorization {
    /// The category.
    pub category: Category,
    /// Its priority.
    pub priority_level: u8,
    /// Whether the category is `test`.
    pub is_test_repository: bool,
    /// `min(100, stars + contributors + prs / 10)`.
    pub monthly_activity_score: u8,
}

/// Job counts of one processor over the evaluation window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessorWindow {
    /// The processor.
    pub processor: Processor,
    /// Successful jobs.
    pub success_count: u64,
    /// Failed jobs.
    pub error_count: u64,
    /// All jobs.
    pub total_jobs: u64,
    /// Mean processing time (ms), when known.
    pub average_processing_time: Option<f64>,
}

/// Queue backlog and processing time of one processor (WIT `processor-signals`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorSignals {
    /// The processor.
    pub processor: Processor,
    /// Backlog depths reported over the window, oldest first.
    pub backlog_depths: Vec<u64>,
    /// Age (s) of the oldest item waiting, at the last report.
    pub backlog_oldest_age_seconds: Option<f64>,
    /// p95 processing time over the window (ms).
    pub p95_processing_time_ms: Option<f64>,
    /// p95 processing time over the same length of time before the last change (ms).
    pub baseline_p95_processing_time_ms: Option<f64>,
}

/// The operator's limits for the signals (WIT `health-limits`); `None` turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealthLimits {
    /// Oldest backlog item older than this (s) → warning.
    pub backlog_warning_age_seconds: Option<f64>,
    /// Oldest backlog item older than this (s) → critical.
    pub backlog_critical_age_seconds: Option<f64>,
    /// Backlog deeper than this → critical.
    pub backlog_critical_depth: Option<u64>,
    /// p95 processing time above this (ms) → warning.
    pub p95_limit_ms: Option<f64>,
    /// p95 above this many times its baseline → warning.
    pub p95_baseline_factor: Option<f64>,
}

/// A health evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The level.
    pub level: HealthLevel,
    /// The action to take.
    pub action: HealthAction,
    /// `100 × errors / jobs` (0 with no jobs).
    pub error_rate: f64,
    /// Jobs in the window.
    pub total_jobs: u64,
    /// Why, in words.
    pub reason: String,
}
