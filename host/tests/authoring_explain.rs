//! The explain chain is the reference rules in words: on every case of the shared vectors
//! its conclusion equals the native reference rules, and exactly one line decides each
//! chain.

use rollout::authoring::explain;
use rollout::cases::{self, Inputs, NativeBackend};
use std::path::{Path, PathBuf};

#[test]
fn the_chain_concludes_what_the_reference_rules_decide_on_every_vector() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors");
    let files = cases::collect_files(&[PathBuf::from(&vectors)]).expect("vectors");
    let mut explained = 0;
    for file in files {
        for case in cases::read_file(&file, true).expect("case file").into_iter().flatten() {
            let Ok(inputs) = case.inputs() else { continue };
            let e = explain::explain(&inputs, &mut NativeBackend);
            assert!(e.agrees, "{}: {}: chain {:?} vs native {}", file.display(), case.name, e.reference, e.policy);
            let sections: Vec<&str> = e.lines.iter().filter(|l| l.decided).map(|l| l.section).collect();
            let expected: &[&str] = match &inputs {
                Inputs::IsEligible(..) => &["eligibility"],
                Inputs::Route(..) => &["eligibility", "routing"],
                Inputs::Categorize(..) => &["categorize"],
                Inputs::EvaluateHealth(..) => &["health level", "health action"],
            };
            assert_eq!(sections, expected, "{}: exactly one deciding line per chain", case.name);
            // The deciding line is the last one of its chain: nothing after it is considered.
            for s in expected {
                let last = e.lines.iter().rev().find(|l| l.section == *s).expect("section");
                assert!(last.decided, "{}: lines after the deciding one in {s}", case.name);
            }
            // The reference chain's decision is what the native rules give.
            let native = cases::evaluate(&case, &mut NativeBackend).expect("native");
            assert!(rollout::authoring::diff::same(&Ok(e.reference.clone()), &Ok(native)), "{}", case.name);
            explained += 1;
        }
    }
    assert!(explained > 400, "only {explained} cases explained");
}
