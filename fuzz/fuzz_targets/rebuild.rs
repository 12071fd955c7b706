//! The streaming `Rebuilder` fed a fuzzed delta in fuzzed cuts and answering `NeedBase` from a
//! fuzzed base, checked against `rebuild_in_memory` on the same delta and base.
//!
//! Input layout: `zipllm_fuzz::RebuildInput` (schedule bytes, manifest body, payload, base).
//! The delta is `preamble | body | blake3(body) | payload`, written by the target so the manifest
//! checksum is always right; the schedule (decoded with `arbitrary`) may then flip one preamble
//! byte. An empty schedule is the plain run: the whole delta at once, the right base bytes,
//! whole-file verification, the base length known.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use zipllm::{Rebuilder, Step};
use zipllm_fuzz::RebuildInput;

#[derive(Arbitrary, Debug, Default)]
struct Schedule {
    /// Sizes of the delta pieces pushed, cycled (0 pushes nothing, but not twice in a row; an
    /// empty list pushes everything at once).
    cuts: Vec<u16>,
    /// Call `end_delta` after this many pushes, even if bytes remain (a truncated stream).
    end_early_after: Option<u8>,
    /// Push with `push_delta_with` / answer with `provide_base_with` instead of the slice APIs.
    use_fill: bool,
    /// Do not give the base length to the machine.
    base_len_unknown: bool,
    /// Skip the whole-file hashes.
    no_verify_whole: bool,
    /// `set_part(part % parts, parts)`, parts in 1..=4.
    part: Option<(u8, u8)>,
    /// Answer every k-th `NeedBase` first with a slice one byte too long or short (must be
    /// refused), then with the right one.
    wrong_base_every: Option<u8>,
    /// XOR one preamble byte (index mod 24) after the checksum was written.
    mangle_preamble: Option<(u8, u8)>,
}

/// Pushes after which the rest of the delta goes in at once (bounds the work per input).
const MAX_PUSHES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let input = RebuildInput::parse(data);
    let sched = Schedule::arbitrary(&mut Unstructured::new(input.schedule)).unwrap_or_default();
    let mut delta = zipllm_fuzz::delta(input.body, input.payload);
    if let Some((at, x)) = sched.mangle_preamble {
        delta[at as usize % zipllm_fuzz::PREAMBLE_LEN] ^= x;
    }
    let base = input.base;

    let parts = sched.part.map_or(1, |(_, n)| (n % 4) as usize + 1);
    let part = sched.part.map_or(0, |(p, _)| p as usize % parts);
    let verify_whole = !sched.no_verify_whole && parts == 1;
    let base_len = (!sched.base_len_unknown).then_some(base.len() as u64);
    // The runs that must agree with rebuild_in_memory: the whole delta given, the right base
    // (wrong-length answers are refused and then corrected, so they do not count).
    let complete = sched.end_early_after.is_none() && sched.mangle_preamble.is_none();
    if !complete {
        let _ = stream(&sched, &delta, base, base_len, verify_whole, part, parts, None);
        return;
    }
    let in_memory = zipllm::rebuild_in_memory(base, &delta);
    let expect = in_memory.as_deref().ok();
    let streamed = stream(&sched, &delta, base, base_len, verify_whole, part, parts, expect);
    match (&streamed, expect) {
        (Err(e), Some(_)) => panic!("rebuild_in_memory succeeded but the stream failed: {e}"),
        (Ok(summary), Some(whole)) if parts == 1 => {
            assert_eq!(summary.size, whole.len() as u64, "streamed length differs")
        }
        _ => {}
    }
    if streamed.is_ok() && verify_whole && base_len.is_some() {
        if let Err(e) = &in_memory {
            panic!("the verified stream succeeded but rebuild_in_memory failed: {e}");
        }
    }
});

/// Drives a `Rebuilder` to the end. Every output is checked against `expect` (the in-memory
/// rebuild) when given.
#[allow(clippy::too_many_arguments)]
fn stream(
    sched: &Schedule,
    delta: &[u8],
    base: &[u8],
    base_len: Option<u64>,
    verify_whole: bool,
    part: usize,
    parts: usize,
    expect: Option<&[u8]>,
) -> zipllm::Result<zipllm::Summary> {
    let mut m = Rebuilder::new(base_len, verify_whole)?;
    if parts > 1 {
        m.set_part(part, parts).expect("a valid part before the first poll");
    }
    let mut pos = 0usize;
    let mut pushes = 0usize;
    let mut ended = false;
    let mut last_cut_empty = false;
    let mut base_answers = 0usize;
    let mut written = 0u64;
    let mut next_at = 0u64;
    loop {
        match m.poll()? {
            Step::NeedDelta => {
                assert!(!ended, "NeedDelta after end_delta: the caller has nothing more to give");
                if pos == delta.len() || sched.end_early_after.is_some_and(|k| pushes >= k as usize)
                {
                    m.end_delta();
                    ended = true;
                    continue;
                }
                let cut = if sched.cuts.is_empty() || pushes >= MAX_PUSHES {
                    delta.len() - pos
                } else {
                    // An empty push is allowed, but never twice in a row (progress).
                    let c = sched.cuts[pushes % sched.cuts.len()] as usize;
                    let c = if c == 0 && last_cut_empty { 1 } else { c };
                    c.min(delta.len() - pos)
                };
                last_cut_empty = cut == 0;
                let bytes = &delta[pos..pos + cut];
                if sched.use_fill {
                    m.push_delta_with(cut, |spare| {
                        for (d, s) in spare.iter_mut().zip(bytes) {
                            d.write(*s);
                        }
                        // SAFETY: every byte of `spare` was written just above.
                        unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
                    })
                    .expect("push_delta_with with a correct fill");
                } else {
                    m.push_delta(bytes);
                }
                pos += cut;
                pushes += 1;
            }
            Step::NeedBase(r) => {
                assert!(r.start <= r.end, "NeedBase with a reversed range {r:?}");
                let (Ok(start), Ok(end)) = (usize::try_from(r.start), usize::try_from(r.end)) else {
                    return Err(zipllm::Error::WrongBase { what: "base range past usize".into() });
                };
                let Some(bytes) = base.get(start..end) else {
                    // The base is too short: stop, as rebuild_in_memory does.
                    return Err(zipllm::Error::WrongBase { what: "the base is too short".into() });
                };
                base_answers += 1;
                if sched.wrong_base_every.is_some_and(|k| base_answers % (k as usize + 1) == 0) {
                    let wrong = if end < base.len() {
                        &base[start..end + 1]
                    } else if start < end {
                        &base[start..end - 1]
                    } else {
                        &base[..0]
                    };
                    if wrong.len() != bytes.len() {
                        assert!(
                            m.provide_base(wrong).is_err(),
                            "provide_base accepted {} bytes for {r:?}",
                            wrong.len()
                        );
                    }
                }
                if sched.use_fill {
                    m.provide_base_with(bytes.len(), |spare| {
                        for (d, s) in spare.iter_mut().zip(bytes) {
                            d.write(*s);
                        }
                        // SAFETY: every byte of `spare` was written just above.
                        unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
                    })?;
                } else {
                    m.provide_base(bytes)?;
                }
            }
            Step::Output { at, bytes } => {
                assert!(at >= next_at, "output at {at} goes back before {next_at}");
                next_at = at + bytes.len() as u64;
                if let Some(whole) = expect {
                    let same = usize::try_from(next_at)
                        .ok()
                        .and_then(|end| whole.get(at as usize..end))
                        .is_some_and(|w| w == bytes);
                    assert!(same, "streamed bytes at {at} differ from rebuild_in_memory");
                }
                written += bytes.len() as u64;
            }
            Step::Done(summary) => {
                assert_eq!(summary.size, written, "Done reports a size other than what was output");
                assert_eq!(m.written(), written);
                // A finished machine stays finished.
                assert!(matches!(m.poll(), Ok(Step::Done(_))));
                return Ok(summary);
            }
        }
    }
}
