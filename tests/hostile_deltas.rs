//! Deltas built to attack the decoder: manifest fields edited with the manifest checksum
//! recomputed (so only validation stands between them and the rebuild), frames that declare
//! more than their stream needs, and work that would grow quadratically. Each is a regression
//! test for a finding of the untrusted-input review, and runs natively and compiled to wasm32
//! (in Chromium, `wasm-pack test ... --test hostile_deltas`), where `usize` is 32 bits.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::{wasm_bindgen_test as test, wasm_bindgen_test_configure};
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test_configure!(run_in_browser);

#[path = "common/mod.rs"]
mod common;

use common::{build, noise, Spec};
use zipllm::codec::blob::BlobDecoder;
use zipllm::codec::entropy::{self, Decompressor};
use zipllm::codec::format::{
    self, Chunk, Manifest, Piece, PieceSource, Preamble, TensorEntry, TensorKind, PREAMBLE_LEN,
};
use zipllm::{DType, EncodeOptions, ErrorCode, Model, Rebuilder, Step};

/// A base and a fine-tune of a few tensors, and a delta cut into many small chunks so edits
/// can target a later chunk, a blob, a piece of each kind.
fn pair() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let weights = noise(64 << 10, 1);
    let mut tuned = weights.clone();
    for (i, b) in tuned.iter_mut().enumerate() {
        if i % 4 == 0 {
            *b ^= 1;
        }
    }
    let spec = |data: Vec<u8>, same: Vec<u8>| {
        vec![
            Spec {
                name: "a.weight".into(),
                dtype: DType::F32,
                shape: vec![(data.len() / 4) as u64],
                data,
            },
            Spec {
                name: "b.bias".into(),
                dtype: DType::BF16,
                shape: vec![2048],
                data: same,
            },
            Spec {
                name: "c.extra".into(),
                dtype: DType::F32,
                shape: vec![1024],
                data: noise(4096, 3),
            },
        ]
    };
    let base = build(&spec(weights, noise(4096, 2)), None);
    let target = build(&spec(tuned, noise(4096, 2)), None);
    let options = EncodeOptions {
        piece_len: 4096,
        chunk_len: 8192,
        ..Default::default()
    };
    let delta = zipllm::encode(&base, &target, &options, &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    (base, target, delta)
}

/// The delta's manifest and payload.
fn split(delta: &[u8]) -> (Manifest, Vec<u8>) {
    let pre = Preamble::parse(delta).unwrap();
    let end = pre.payload_offset() as usize;
    let manifest = Manifest::parse(&delta[PREAMBLE_LEN as usize..end]).unwrap();
    (manifest, delta[end..].to_vec())
}

/// The delta with its manifest edited by `edit` and the manifest checksum recomputed.
fn edited(delta: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let (mut m, payload) = split(delta);
    edit(&mut m);
    let mut out = m.to_bytes().unwrap();
    out.extend_from_slice(&payload);
    out
}

/// Rebuilds through the streaming machine, feeding the delta `cut` bytes at a time.
fn stream(base: &[u8], delta: &[u8], cut: usize, verify_whole: bool) -> zipllm::Result<Vec<u8>> {
    let mut machine = Rebuilder::new(Some(base.len() as u64), verify_whole)?;
    let mut fed = 0;
    let mut out = Vec::new();
    loop {
        match machine.poll()? {
            Step::NeedDelta if fed < delta.len() => {
                let end = (fed + cut).min(delta.len());
                machine.push_delta(&delta[fed..end]);
                fed = end;
            }
            Step::NeedDelta => machine.end_delta(),
            Step::NeedBase(r) => machine.provide_base(&base[r.start as usize..r.end as usize])?,
            Step::Output { bytes, .. } => out.extend_from_slice(bytes),
            Step::Done(_) => return Ok(out),
        }
    }
}

/// Every decoding path refuses `delta` with `code` and a message naming the problem: one
/// containing one of `needles`.
fn refused(base: &[u8], delta: &[u8], code: ErrorCode, needles: &[&str]) {
    let results = [
        zipllm::Plan::from_delta_head(delta).map(|_| Vec::new()),
        zipllm::rebuild_in_memory(base, delta),
        stream(base, delta, 1, true),
        stream(base, delta, 4096, false),
    ];
    for (i, r) in results.into_iter().enumerate() {
        let err = r.expect_err(&format!("path {i} accepted the delta"));
        assert_eq!(err.code(), code, "path {i}: {err}");
        let message = err.to_string();
        assert!(
            needles.iter().any(|n| message.contains(n)),
            "path {i}: `{message}`"
        );
    }
}

#[test]
fn the_unedited_pair_rebuilds() {
    let (base, target, delta) = pair();
    let (m, _) = split(&delta);
    assert!(m.chunks.len() >= 4, "{} chunks", m.chunks.len());
    assert!(m.blobs.len() >= 4);
    assert_eq!(stream(&base, &delta, 1, true).unwrap(), target);
    assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target);
}

#[test]
fn payload_length_near_2_pow_64_is_refused() {
    let (base, _, delta) = pair();
    for len in [u64::MAX, u64::MAX - 24, u64::MAX / 2, 1 << 40] {
        let hostile = edited(&delta, |m| {
            let last = m.blobs.len() - 1;
            m.blobs[last].len = len - m.blobs[last].offset.min(len);
            m.payload_len = m.blobs[last].offset + m.blobs[last].len;
        });
        refused(
            &base,
            &hostile,
            ErrorCode::CorruptDelta,
            &["blob", "payload"],
        );
    }
}

#[test]
fn chunk_piece_range_past_u32_is_refused() {
    // first_piece + piece_count wrapped in usize on wasm32 and passed the range check.
    let (base, _, delta) = pair();
    for count in [u32::MAX, u32::MAX - 1, 1 << 31] {
        let hostile = edited(&delta, |m| m.chunks[1].piece_count = count);
        refused(&base, &hostile, ErrorCode::CorruptDelta, &["chunk 1"]);
    }
}

#[test]
fn piece_base_range_past_u64_is_refused() {
    // Piece::base() added base_start + len before anything checked base_start.
    let (base, _, delta) = pair();
    let (m, _) = split(&delta);
    let at = m
        .pieces
        .iter()
        .position(|p| p.source.base_start().is_some())
        .unwrap();
    for start in [u64::MAX, u64::MAX - 4095, u64::MAX - 8] {
        let hostile = edited(&delta, |m| {
            m.pieces[at].source = match m.pieces[at].source {
                PieceSource::Base { .. } => PieceSource::Base { base_start: start },
                PieceSource::BaseAndBlob { blob, .. } => PieceSource::BaseAndBlob {
                    base_start: start,
                    blob,
                },
                blob => blob,
            };
        });
        refused(&base, &hostile, ErrorCode::CorruptDelta, &["reads outside"]);
    }
}

#[test]
fn blob_longer_than_its_piece_can_need_is_refused() {
    let (base, _, delta) = pair();
    let (m, _) = split(&delta);
    let need = m
        .pieces
        .iter()
        .filter(|p| p.source.blob() == Some(0))
        .map(|p| p.len)
        .max()
        .unwrap();
    let hostile = edited(&delta, |m| {
        let grow = format::max_blob_len(need) + 1 - m.blobs[0].len;
        m.blobs[0].len += grow;
        for b in &mut m.blobs[1..] {
            b.offset += grow;
        }
        m.payload_len += grow;
    });
    refused(&base, &hostile, ErrorCode::CorruptDelta, &["can need"]);
}

#[test]
fn base_header_past_the_safetensors_limit_is_refused() {
    // Before, only the base's size bounded it: a decoder asked for (and buffered) that much.
    let (base, _, delta) = pair();
    let hostile = edited(&delta, |m| {
        m.base_size = 1 << 40;
        m.base_header_len = format::MAX_BASE_HEADER_LEN + 1;
    });
    refused(
        &base,
        &hostile,
        ErrorCode::CorruptDelta,
        &["base header length"],
    );
    let mut machine = Rebuilder::new(None, true).unwrap();
    machine.push_delta(&hostile);
    machine.end_delta();
    assert_eq!(
        machine.poll().unwrap_err().code(),
        ErrorCode::CorruptDelta,
        "the machine must not ask for the base header"
    );
}

/// A zstd frame (RFC 8878) of one raw block holding `data`, declaring a window of
/// 2^(10 + exponent) bytes and no content size.
fn frame_with_window(exponent: u8, data: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0x00); // no content size, not single-segment, no checksum, no dictionary
    f.push(exponent << 3);
    let header = ((data.len() as u32) << 3) | 1; // raw block, last
    f.extend_from_slice(&header.to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

/// A single-segment frame of one raw block: its window is its recorded content size.
fn sized_frame(data: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0x20); // single segment, a 1-byte content size
    f.push(data.len() as u8);
    let header = ((data.len() as u32) << 3) | 1;
    f.extend_from_slice(&header.to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

#[test]
fn zstd_frames_are_bounded_by_their_stream() {
    let data = noise(100, 7);
    let decoders = || [Decompressor::new().unwrap(), Decompressor::pure_rust()];
    let mut out = vec![0u8; data.len()];
    for mut d in decoders() {
        d.decompress_into(&frame_with_window(0, &data), &mut out)
            .unwrap();
        assert_eq!(out, data);
    }
    // ruzstd reserved whatever window a frame declared (up to 100 MiB) for a 100-byte stream.
    let big_window = frame_with_window(16, &data);
    let mut two = frame_with_window(0, &data);
    two.extend_from_slice(&frame_with_window(0, &data));
    let mut skippable = vec![0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    skippable.extend_from_slice(&frame_with_window(0, &data));
    let mut sized = sized_frame(&data);
    let cases: [(&[u8], usize, &str); 4] = [
        (&big_window, data.len(), "window"),
        (&two, data.len(), "after the frame"),
        (&skippable, data.len(), "not a zstd frame"),
        (&sized, data.len() + 1, "holds 100 bytes"),
    ];
    for (frame, len, needle) in cases {
        let mut out = vec![0u8; len];
        for mut d in decoders() {
            let err = d.decompress_into(frame, &mut out).unwrap_err();
            assert_eq!(err.code(), ErrorCode::CorruptDelta, "{err}");
            assert!(err.to_string().contains(needle), "`{err}`");
        }
        let err = entropy::check_frame(frame, len).unwrap_err();
        assert!(err.to_string().contains(needle), "`{err}`");
    }
    // A frame recording its size still passes, and one our encoder writes.
    let mut out = vec![0u8; data.len()];
    Decompressor::pure_rust()
        .decompress_into(&sized, &mut out)
        .unwrap();
    assert_eq!(out, data);
    let packed = entropy::compress(&noise(5000, 8).repeat(4), 1).unwrap();
    entropy::check_frame(&packed, 20000).unwrap();
    sized.truncate(sized.len() - 1);
    assert!(entropy::check_frame(&sized, data.len()).is_err());
    // And a blob whose stream holds such a frame is refused as a blob.
    let mut blob = vec![0u8, 0, 1, 1, 1];
    blob.extend_from_slice(&(data.len() as u64).to_le_bytes());
    blob.extend_from_slice(&(big_window.len() as u64).to_le_bytes());
    blob.extend_from_slice(&big_window);
    let err = BlobDecoder::new()
        .unwrap()
        .decode(&blob, None, 1, &mut out)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptDelta, "{err}");
}

#[test]
fn scattered_base_reads_are_answered_in_linear_time() {
    // Every piece copies a 2-byte block from elsewhere in the base, so no two base reads merge:
    // 200,000 reads in one chunk. Answering each by removing it from the front of a Vec made
    // this quadratic (hours); it must rebuild at once, on every path.
    const BLOCKS: usize = 200_000;
    let data = noise(2 * BLOCKS, 11);
    let base = build(
        &[Spec {
            name: "w".into(),
            dtype: DType::U8,
            shape: vec![data.len() as u64],
            data: data.clone(),
        }],
        None,
    );
    let base_model = Model::parse(&base).unwrap();
    let mut rng = common::Rng::new(5);
    let order: Vec<usize> = (0..BLOCKS)
        .map(|i| (i * 7919 + rng.below(3) as usize) % BLOCKS)
        .collect();
    let moved: Vec<u8> = order
        .iter()
        .flat_map(|&b| data[2 * b..2 * b + 2].iter().copied())
        .collect();
    let target = build(
        &[Spec {
            name: "w".into(),
            dtype: DType::U8,
            shape: vec![moved.len() as u64],
            data: moved.clone(),
        }],
        None,
    );
    let model = Model::parse(&target).unwrap();
    let t = &model.tensors[0];
    let pieces: Vec<Piece> = order
        .iter()
        .enumerate()
        .map(|(i, &b)| Piece {
            out_start: t.start + 2 * i as u64,
            len: 2,
            source: PieceSource::Base {
                base_start: base_model.tensors[0].start + 2 * b as u64,
            },
        })
        .collect();
    let manifest = Manifest {
        target_size: target.len() as u64,
        target_blake3: *blake3::hash(&target).as_bytes(),
        target_sha256: {
            use sha2::Digest;
            sha2::Sha256::digest(&target).into()
        },
        base_size: base.len() as u64,
        base_header_len: base_model.header_len,
        base_header_blake3: *blake3::hash(&base[..base_model.header_len as usize]).as_bytes(),
        header: target[..model.header_len as usize].to_vec(),
        tensors: vec![TensorEntry {
            name: "w".into(),
            dtype: DType::U8,
            out: t.start..t.end,
            kind: TensorKind::Delta,
            reference: base_model.tensors[0].start,
        }],
        blobs: Vec::new(),
        chunks: vec![Chunk {
            out_start: t.start,
            out_len: moved.len() as u64,
            first_piece: 0,
            piece_count: BLOCKS as u32,
            out_blake3: *blake3::hash(&moved).as_bytes(),
            base_blake3: *blake3::hash(&moved).as_bytes(),
        }],
        pieces,
        payload_len: 0,
    };
    let delta = manifest.to_bytes().unwrap();
    let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
    assert!(plan.manifest.base_reads(0).len() > BLOCKS / 2);
    assert_eq!(stream(&base, &delta, 1 << 20, true).unwrap(), target);
    assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target);
}

#[test]
fn hand_built_manifests_are_validated_by_plan() {
    let (_, _, delta) = pair();
    let (mut m, _) = split(&delta);
    m.chunks[1].piece_count = u32::MAX;
    let offset = PREAMBLE_LEN + 1000;
    let err = zipllm::Plan::new(m, offset).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptDelta, "{err}");
}

#[test]
fn the_encoder_refuses_chunks_its_decoder_would_refuse() {
    let (base, target, _) = pair();
    let options = EncodeOptions {
        piece_len: format::MAX_PIECE_LEN,
        chunk_len: format::MAX_CHUNK_LEN,
        ..Default::default()
    };
    let err = zipllm::encode(&base, &target, &options, &|_| {}).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
    let options = EncodeOptions {
        chunk_len: 0,
        ..Default::default()
    };
    assert!(zipllm::encode(&base, &target, &options, &|_| {}).is_err());
    // The longest chunk the options allow is still one the decoder accepts.
    let options = EncodeOptions {
        piece_len: 8,
        chunk_len: format::MAX_CHUNK_LEN + 1 - 8,
        ..Default::default()
    };
    let delta = zipllm::encode(&base, &target, &options, &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target);
}

#[test]
fn the_summary_says_whether_the_whole_file_was_hashed() {
    let (base, target, delta) = pair();
    let summary = |verify_whole: bool| {
        let mut machine = Rebuilder::new(Some(base.len() as u64), verify_whole).unwrap();
        machine.push_delta(&delta);
        machine.end_delta();
        loop {
            match machine.poll().unwrap() {
                Step::NeedBase(r) => machine
                    .provide_base(&base[r.start as usize..r.end as usize])
                    .unwrap(),
                Step::Done(s) => return s,
                _ => {}
            }
        }
    };
    let checked = summary(true);
    assert!(checked.full_hash_checked);
    assert_eq!(checked.sha256, common::sha256_hex(&target));
    assert_eq!(checked.blake3, blake3::hash(&target).to_hex().as_str());
    assert!(!summary(false).full_hash_checked);
}

#[test]
fn an_expected_sha256_pins_the_output() {
    let (base, target, delta) = pair();
    let run = |expected: [u8; 32]| -> zipllm::Result<u64> {
        let mut machine = Rebuilder::new(Some(base.len() as u64), true)?;
        machine.expect_sha256(expected)?;
        machine.push_delta(&delta);
        machine.end_delta();
        let mut outputs = 0;
        loop {
            match machine.poll()? {
                Step::NeedBase(r) => {
                    machine.provide_base(&base[r.start as usize..r.end as usize])?
                }
                Step::Output { .. } => outputs += 1,
                Step::Done(_) => return Ok(outputs),
                Step::NeedDelta => unreachable!("the whole delta was given"),
            }
        }
    };
    let sha: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&target).into()
    };
    assert!(run(sha).unwrap() > 1);
    let mut other = sha;
    other[0] ^= 1;
    let err = run(other).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnexpectedTarget, "{err}");
    // Without the whole-file hash there is nothing to compare: refused up front.
    let mut machine = Rebuilder::new(None, false).unwrap();
    assert_eq!(
        machine.expect_sha256(sha).unwrap_err().code(),
        ErrorCode::InvalidInput
    );
}

#[test]
fn both_zstd_backends_check_a_frame_checksum() {
    // ruzstd's encoder writes content checksums; C zstd checks them when decoding, and so must
    // the ruzstd path, or the two backends would disagree on a damaged checksum.
    let data = noise(3000, 9).repeat(3);
    let frame = ruzstd::encoding::compress_to_vec(
        data.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    assert_ne!(frame[4] & 0x04, 0, "the frame carries a checksum");
    let mut out = vec![0u8; data.len()];
    for mut d in [Decompressor::new().unwrap(), Decompressor::pure_rust()] {
        d.decompress_into(&frame, &mut out).unwrap();
        assert_eq!(out, data);
        let mut bad = frame.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x40;
        let err = d.decompress_into(&bad, &mut out).unwrap_err();
        assert_eq!(err.code(), ErrorCode::CorruptDelta, "{err}");
    }
}
