//! Preamble and manifest parsing, and every accessor of the plan built from it.
//!
//! The input is a manifest BODY: the target wraps it in a correct preamble and appends
//! blake3(body) (see `zipllm_fuzz::delta`), so mutations reach the field checks instead of
//! dying at the checksum. The raw input also goes through `Preamble::parse` as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipllm::codec::format::{Manifest, Preamble, PREAMBLE_LEN};
use zipllm::Plan;

fuzz_target!(|data: &[u8]| {
    // The preamble parser on raw bytes (magic, version, flags, length limit).
    let _ = Preamble::parse(data);

    let delta = zipllm_fuzz::delta(data, &[]);
    let pre = Preamble::parse(&delta).expect("the preamble we wrote parses");
    assert_eq!(pre.manifest_len, data.len() as u64);
    let head = &delta[PREAMBLE_LEN as usize..];

    let parsed = Manifest::parse(head);
    let from_head = Plan::from_delta_head(&delta);
    assert_eq!(
        parsed.is_ok(),
        from_head.is_ok(),
        "Manifest::parse and Plan::from_delta_head disagree: {:?} / {:?}",
        parsed.as_ref().err(),
        from_head.as_ref().err()
    );
    let Ok(manifest) = parsed else { return };

    // A parsed manifest serializes to a head that parses again and serializes the same (the
    // bytes may differ from the input only in fields the format ignores: the base offset of a
    // kind-2 piece and the blob of a kind-0 piece).
    let again = manifest.to_bytes().expect("a parsed manifest serializes");
    let reparsed = Manifest::parse(&again[PREAMBLE_LEN as usize..])
        .expect("a serialized manifest parses again");
    assert!(reparsed.to_bytes().unwrap() == again, "manifest does not round-trip");

    let plan = Plan::new(manifest, pre.payload_offset()).expect("Plan::new after a good parse");
    let plan2 = from_head.unwrap();
    assert_eq!(plan.payload_offset, plan2.payload_offset);
    exercise(&plan);
});

fn exercise(plan: &Plan) {
    let m = &plan.manifest;
    let _ = m.target_model();
    let delta_len = plan.delta_len();
    assert!(delta_len >= plan.payload_offset);
    let _ = plan.base_header_range();
    let _ = plan.check_base(None, &[]);
    let _ = plan.check_base(Some(m.base_size), &[]);

    for (i, c) in m.chunks.iter().enumerate() {
        let blobs = plan.chunk_blobs(i);
        for &b in &blobs {
            assert!((b as usize) < m.blobs.len());
            let r = plan.blob_range(b);
            assert!(r.start <= r.end && r.end <= delta_len, "blob {b} range {r:?} past the delta");
        }
        let reads = m.base_reads(i);
        for r in &reads {
            assert!(
                m.base_header_len <= r.start && r.start <= r.end && r.end <= m.base_size,
                "chunk {i} reads base {r:?} outside the base's data"
            );
        }
        let cs = plan.chunks_for(c.out());
        assert!(cs.contains(&i), "chunks_for({:?}) = {cs:?} misses chunk {i}", c.out());
        let _ = plan.chunks_for(c.out_start..c.out_start.saturating_add(1));
        let _ = c.pieces();
    }
    let _ = plan.chunks_for(0..u64::MAX);
    let _ = plan.chunks_for(u64::MAX..0);
    let _ = plan.chunks_for(m.target_size / 2..m.target_size);
    let _ = zipllm::codec::inspect::report(plan, |_| None);
    let _ = zipllm::codec::inspect::report(plan, |b| Some(if b % 2 == 0 { &[2u8, 3][..] } else { &[7u8][..] }));
}
