//! Family matching (src/family.rs) on a fuzzed model and a fuzzed fingerprint: sample plans
//! (`SamplePlan::new`, `SamplePlan::with_budget`), `plan.fingerprint`, `family::compare`,
//! `family::reads_needed`, `family::compare_bytes`, and a `Fingerprint` read from fuzzed JSON
//! (what the npm package's `matchFamily` deserializes) or from the binary `.fp` layout
//! (`Fingerprint::from_bytes`, what the CLI's `match` reads).
//!
//! Input layout: `zipllm_fuzz::FingerprintInput` (fraction/budget selectors, the model file,
//! the fingerprint).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipllm::family::{self, Fingerprint, SamplePlan};
use zipllm::Model;
use zipllm_fuzz::FingerprintInput;

fuzz_target!(|data: &[u8]| {
    let input = FingerprintInput::parse(data);
    let file = input.model;

    let fp_in: Option<Fingerprint> = if input.binary {
        Fingerprint::from_bytes(input.fingerprint).ok()
    } else {
        serde_json::from_slice(input.fingerprint).ok()
    };

    let Ok(model) = Model::parse(file) else {
        return;
    };

    // The model's own fingerprint, by both plans; every range lies in the file.
    let plans = [
        SamplePlan::new(&model, input.fraction),
        SamplePlan::with_budget(&model, input.max_bytes, input.share),
    ];
    let mut own = Vec::new();
    for plan in &plans {
        let mut bytes = Vec::with_capacity(plan.ranges.len());
        for r in &plan.ranges {
            assert!(r.start <= r.end && r.end <= file.len() as u64, "plan range {r:?} past the file");
            bytes.push(file[r.start as usize..r.end as usize].to_vec());
        }
        let fp = plan.fingerprint(&model, &bytes).expect("fingerprint from the plan's own ranges");
        assert_eq!(fp.samples.len(), plan.blocks.len());
        // A wrong number of ranges is refused.
        bytes.push(Vec::new());
        assert!(plan.fingerprint(&model, &bytes).is_err());
        own.push(fp);
    }

    // Reads for `compare`, answered from the file (checked, as the callers do).
    let starts: Vec<(u64, u64)> = model.tensors.iter().map(|t| (t.start, t.end)).collect();
    let read = |i: usize, off: u64, len: u64| -> zipllm::Result<Vec<u8>> {
        let (s, e) = *starts
            .get(i)
            .ok_or_else(|| zipllm::Error::InvalidInput { what: "no such tensor".into() })?;
        let a = s.checked_add(off).filter(|a| *a <= e);
        let b = a.and_then(|a| a.checked_add(len)).filter(|b| *b <= e);
        match (a, b) {
            (Some(a), Some(b)) => Ok(file[a as usize..b as usize].to_vec()),
            _ => Err(zipllm::Error::InvalidInput { what: "sample past the end of a tensor".into() }),
        }
    };

    // The model's own (budgeted) fingerprint against itself, as `match` does for a base.
    if let Ok(v) = family::compare("self", &own[1], &model, read) {
        check_verdict(&v);
    }
    // The fuzzed fingerprint against the model, as the npm package's matchFamily does (the
    // reads first, then compare) and as the CLI's match does (compare_bytes).
    if let Some(fp) = &fp_in {
        if let Ok(wanted) = family::reads_needed(fp, &model) {
            for &(t, _, _) in &wanted {
                assert!(t < model.tensors.len(), "reads_needed names tensor {t}");
            }
        }
        if let Ok(v) = family::compare("candidate", fp, &model, read) {
            check_verdict(&v);
        }
        if let Ok(v) = family::compare_bytes("candidate", fp, file) {
            check_verdict(&v);
        }
        // The binary file layout round-trips (for fingerprints whose samples hold the bytes
        // their blocks say; JSON can say otherwise).
        if fp.samples.iter().all(|s| s.bytes.len() as u64 == s.block.len) {
            let bytes = fp.to_bytes().expect("a fingerprint serializes");
            let back =
                Fingerprint::from_bytes(&bytes).expect("a serialized fingerprint reads back");
            assert_eq!(back.samples, fp.samples);
        }
    }
});

fn check_verdict(v: &family::Verdict) {
    assert!((0.0..=1.0).contains(&v.overlap), "overlap {}", v.overlap);
    if let Some(d) = v.normalized_distance {
        assert!((0.0..=1.0).contains(&d), "normalized distance {d}");
    }
}
