//! The codes of the batch columns (`columns.rs`) and of every enum crossing the component
//! boundary are positions in the WIT enums' case lists: the canonical ABI lowers an enum to
//! its case index, and the batch columns reuse those indices (categories and trigger
//! sources shifted by one, 0 meaning none). A case reordered or inserted in
//! `wit/policy.wit` but not in the Rust enums would silently swap decisions, so this test
//! reads the WIT file itself and compares every enum's cases, in order, with `ALL`.
//! (`js/test/wit-order.test.js` does the same for the JavaScript wrapper.)

use rollout_policy::{
    Category, EligibilityReason, HealthAction, HealthLevel, Processor, RouteRule, Section, Strategy, TriggerSource,
};

/// The cases of `enum <name> { … }` in `wit`, in order, kebab-case turned to snake_case.
fn wit_enum(wit: &str, name: &str) -> Vec<String> {
    let start = wit.find(&format!("enum {name} {{")).unwrap_or_else(|| panic!("wit/policy.wit has no enum `{name}`"));
    let body = &wit[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    body.lines()
        .map(|l| l.split("//").next().unwrap_or("").trim().trim_end_matches(','))
        .filter(|l| !l.is_empty())
        .map(|case| case.trim_start_matches('%').replace('-', "_"))
        .collect()
}

fn names<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<String> {
    all.iter().map(|v| as_str(*v).to_owned()).collect()
}

#[test]
fn every_enum_lists_the_wit_cases_in_the_wit_order() {
    let wit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/policy.wit")).unwrap();
    let pairs: [(&str, Vec<String>); 9] = [
        ("strategy", names(Strategy::ALL, Strategy::as_str)),
        ("category", names(Category::ALL, Category::as_str)),
        ("trigger-source", names(TriggerSource::ALL, TriggerSource::as_str)),
        ("processor", names(Processor::ALL, Processor::as_str)),
        ("eligibility-reason", names(EligibilityReason::ALL, EligibilityReason::as_str)),
        ("route-rule", names(RouteRule::ALL, RouteRule::as_str)),
        ("health-level", names(HealthLevel::ALL, HealthLevel::as_str)),
        ("health-action", names(HealthAction::ALL, HealthAction::as_str)),
        ("section", names(Section::ALL, Section::as_str)),
    ];
    for (wit_name, rust) in pairs {
        let mut cases = wit_enum(&wit, wit_name);
        assert!(!cases.is_empty(), "enum `{wit_name}` has no cases in wit/policy.wit");
        if matches!(wit_name, "eligibility-reason" | "route-rule") {
            // the host's own answer when no policy could decide: never crosses the boundary,
            // kept after the WIT's cases so it never shifts their codes
            cases.push("policy_error".to_owned());
        }
        assert_eq!(rust, cases, "the Rust cases of `{wit_name}` are not the WIT's, in the WIT's order");
    }
}

#[test]
fn the_batch_columns_encode_positions_in_the_wit_order() {
    use rollout_policy::{Job, JobColumns, Repository, RepositoryColumns};
    let wit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/policy.wit")).unwrap();
    // categories: 1 + the WIT position (0 is none)
    for (i, name) in wit_enum(&wit, "category").iter().enumerate() {
        let category = Category::parse(name).unwrap();
        let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", Some(category));
        assert_eq!(RepositoryColumns::encode(&[repo]).categories, vec![u8::try_from(i + 1).unwrap()], "{name}");
    }
    // trigger sources: 1 + the WIT position (0 is none)
    for (i, name) in wit_enum(&wit, "trigger-source").iter().enumerate() {
        let job = Job { trigger_source: Some(TriggerSource::parse(name).unwrap()), ..Job::default() };
        assert_eq!(JobColumns::encode(&[job]).trigger_sources, vec![u8::try_from(i + 1).unwrap()], "{name}");
    }
}
