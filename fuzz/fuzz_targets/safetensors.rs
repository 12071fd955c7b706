//! safetensors header parsing (`Model::parse`, `Model::header_region_len`,
//! `Model::parse_header`) and, on a file that parses, the bf16 cast, whose output must parse
//! with the same tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zipllm::model::cast_f32_to_bf16;
use zipllm::{DType, Model};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let region = Model::header_region_len(data, Some(len));
    let _ = Model::header_region_len(data, None);
    // The header alone, with and without the file length.
    let header_only = Model::parse_header(data, None);
    let _ = Model::parse_header(data, Some(len));
    if let Ok(r) = &region {
        assert!(*r <= len);
        let _ = Model::parse_header(&data[..*r as usize], Some(u64::MAX));
    }
    let Ok(model) = Model::parse(data) else { return };
    assert_eq!(model.file_len, len);
    assert_eq!(Ok(model.header_len), region.as_ref().map(|r| *r).map_err(|_| ()));
    let h = header_only.expect("a file that parses has a header that parses alone");
    assert_eq!(h.tensors, model.tensors);
    let mut end = model.header_len;
    for (i, t) in model.tensors.iter().enumerate() {
        assert_eq!(t.start, end, "tensors do not tile the data");
        end = t.end;
        assert_eq!(model.index_of(&t.name), Some(i));
    }
    assert_eq!(end, len);

    let mut out = Vec::new();
    cast_f32_to_bf16(data, &mut out).expect("the cast of a file that parses");
    let cast = Model::parse(&out).expect("the cast output parses");
    assert_eq!(cast.tensors.len(), model.tensors.len());
    for (a, b) in model.tensors.iter().zip(&cast.tensors) {
        let want = if a.dtype == DType::F32 { DType::BF16 } else { a.dtype };
        assert_eq!(a.shape, b.shape, "cast changed the shape of `{}`", a.name);
        assert_eq!(b.dtype, want, "cast gave `{}` dtype {}", a.name, b.dtype);
    }
});
