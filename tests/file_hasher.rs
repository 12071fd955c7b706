//! The streaming hasher behind `hashFile`/`hashTensors`: the whole file's sha256 and blake3 and
//! each tensor's blake3, whatever the cuts the bytes arrive in.
#![cfg(not(target_arch = "wasm32"))]

mod common;

/// A small safetensors file: an empty tensor first, one between, one last.
fn safetensors() -> (Vec<u8>, Vec<(&'static str, std::ops::Range<usize>)>) {
    let header = r#"{"e0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]},"e1":{"dtype":"BF16","shape":[0,3],"data_offsets":[4000,4000]},"b":{"dtype":"U8","shape":[5],"data_offsets":[4000,4005]},"e2":{"dtype":"I8","shape":[0],"data_offsets":[4005,4005]}}"#;
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    let h = f.len();
    f.extend(common::noise(4005, 1));
    let spans = vec![
        ("e0", h..h),
        ("a", h..h + 4000),
        ("e1", h + 4000..h + 4000),
        ("b", h + 4000..h + 4005),
        ("e2", h + 4005..h + 4005),
    ];
    (f, spans)
}

#[test]
fn file_hasher_hashes_every_tensor_whatever_the_cuts() {
    use sha2::Digest as _;
    let (file, spans) = safetensors();
    for cut in [1, 7, 8, 9, 100, 4096, file.len()] {
        let mut h = zipllm::hash::FileHasher::with_tensors();
        for piece in file.chunks(cut) {
            h.update(piece).unwrap();
        }
        let got = h.finish().unwrap();
        assert_eq!(got.size, file.len() as u64);
        assert_eq!(got.sha256, hex::encode(sha2::Sha256::digest(&file)));
        assert_eq!(got.blake3, blake3::hash(&file).to_hex().as_str());
        let tensors = got.tensors.unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["e0", "a", "e1", "b", "e2"], "cut {cut}");
        for (t, (_, span)) in tensors.iter().zip(&spans) {
            assert_eq!(
                t.blake3,
                blake3::hash(&file[span.clone()]).to_hex().as_str()
            );
            assert_eq!(t.bytes, span.len() as u64);
        }
    }
}

#[test]
fn file_hasher_refuses_a_file_of_the_wrong_length() {
    let (file, _) = safetensors();
    for bad in [&file[..file.len() - 1], &file[..5], &[0u8; 0][..]] {
        let mut h = zipllm::hash::FileHasher::with_tensors();
        h.update(bad).unwrap();
        assert_eq!(
            h.finish().unwrap_err().code(),
            zipllm::ErrorCode::BadSafetensors
        );
    }
    let mut long = file.clone();
    long.push(0);
    let mut h = zipllm::hash::FileHasher::with_tensors();
    assert_eq!(
        h.update(&long).unwrap_err().code(),
        zipllm::ErrorCode::BadSafetensors
    );
    // Without tensors, any bytes are a file.
    let mut h = zipllm::hash::FileHasher::new();
    h.update(&long).unwrap();
    assert_eq!(h.finish().unwrap().size, long.len() as u64);
}
