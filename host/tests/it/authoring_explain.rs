//! Explanations come from the policy: on every case of the shared vectors the reference
//! rules explain natively and through the component with the same checks, the decision
//! they explain is the one they make, and exactly one check decides each section.

use rollout::authoring::explain;
use rollout::cases::{self, Inputs};
use rollout::engine::{NativePolicy, Policy};
use rollout::runtime::{Limits, Sandbox, BUNDLED_POLICY};
use std::path::{Path, PathBuf};

#[test]
fn the_reference_explains_every_vector_alike_natively_and_in_wasm() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors");
    let files = cases::collect_files(&[PathBuf::from(&vectors)]).expect("vectors");
    let native = NativePolicy::new();
    let wasm = Sandbox::compile(BUNDLED_POLICY, "bundled", Limits::default()).expect("the bundled policy");
    let mut explained = 0;
    for file in files {
        for case in cases::read_file(&file, true).expect("case file").into_iter().flatten() {
            let Ok(inputs) = case.inputs() else { continue };
            let Ok(e) = explain::explain(&inputs, &native) else { continue };
            let w = explain::explain(&inputs, &wasm).expect("the component explains");
            assert_eq!(e, w, "{}: {}: native and component explain differently", file.display(), case.name);
            // the decision explained is the decision made
            let decided = cases::evaluate(&case, &native).expect("native");
            assert_eq!(e.decision, decided, "{}: {}", file.display(), case.name);
            let sections: Vec<&str> = e.lines.iter().filter(|l| l.decided).map(|l| l.section).collect();
            let expected: &[&str] = match &inputs {
                Inputs::IsEligible(..) => &["eligibility"],
                Inputs::Route(..) => &["eligibility", "routing"],
                Inputs::Categorize(..) => &["categorization"],
                Inputs::EvaluateHealth(..) => &["health_level", "health_action"],
            };
            assert_eq!(sections, expected, "{}: exactly one deciding check per section", case.name);
            explained += 1;
        }
    }
    assert!(explained > 400, "only {explained} cases explained");
    assert!(wasm.version().is_some());
}
