//! Output files of the native adapters and the CLI: created with the user's umask, renamed into
//! place only once complete and verified, and nothing (no output, no `.zipllm-*.part`) left
//! behind by a failure.
#![cfg(all(not(target_arch = "wasm32"), feature = "native"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixture;
use zipllm::native;
use zipllm::{Error, ErrorCode};

const EXE: &str = env!("CARGO_BIN_EXE_zipllm");

fn base() -> PathBuf {
    fixture("sample-v1/base.safetensors")
}
fn delta() -> PathBuf {
    fixture("sample-v1/delta.zld")
}
fn target() -> Vec<u8> {
    std::fs::read(fixture("sample-v1/target.safetensors")).unwrap()
}

/// The sample delta with its last byte flipped: the manifest parses and the first chunks decode,
/// then the last chunk fails its checksum (the output has been partly written by then).
fn corrupt_delta(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(delta()).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    let p = dir.join("corrupt.zld");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_no_part_file(dir: &Path) {
    let left: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".zipllm-") || n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

fn decode(base: &Path, delta: &Path, out: &Path) -> Output {
    Command::new(EXE)
        .arg("decode")
        .arg("--base")
        .arg(base)
        .arg(delta)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

fn assert_exit(out: &Output, code: ErrorCode) {
    assert_eq!(
        out.status.code(),
        Some(code.exit_status()),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the CLI with `args` under `umask` (through sh, which sets it for the process it execs).
#[cfg(unix)]
fn run_with_umask(umask: &str, args: &[&std::ffi::OsStr]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(EXE)
        .args(args)
        .output()
        .unwrap()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
#[test]
fn decode_and_encode_outputs_follow_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    for (umask, want) in [("027", 0o640), ("022", 0o644), ("077", 0o600)] {
        let out = dir.path().join(format!("out-{umask}.safetensors"));
        let r = run_with_umask(
            umask,
            &[
                "decode".as_ref(),
                "--base".as_ref(),
                base().as_os_str(),
                delta().as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
        );
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), target());
        assert_eq!(mode(&out), want, "decode under umask {umask}");

        let encoded = dir.path().join(format!("delta-{umask}.zld"));
        let r = run_with_umask(
            umask,
            &[
                "encode".as_ref(),
                "--base".as_ref(),
                base().as_os_str(),
                "--target".as_ref(),
                out.as_os_str(),
                "-o".as_ref(),
                encoded.as_os_str(),
            ],
        );
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(mode(&encoded), want, "encode under umask {umask}");
    }
    assert_no_part_file(dir.path());
}

#[test]
fn failed_decode_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let corrupt = corrupt_delta(dir.path());
    let before = names(dir.path());

    // Wrong base: refused once the output's temporary file exists.
    let wrong_base = fixture("sample-v1/target.safetensors");
    assert_exit(&decode(&wrong_base, &delta(), &out), ErrorCode::WrongBase);
    assert_eq!(names(dir.path()), before);

    // Corrupt delta: fails on the last chunk, after the first ones were written.
    assert_exit(&decode(&base(), &corrupt, &out), ErrorCode::CorruptDelta);
    assert_eq!(names(dir.path()), before);
    assert!(!out.exists());
    assert_no_part_file(dir.path());
}

#[test]
fn existing_output_is_replaced_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let corrupt = corrupt_delta(dir.path());
    std::fs::write(&out, b"the previous file").unwrap();
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&out).unwrap().ino()
    };

    assert_exit(&decode(&base(), &corrupt, &out), ErrorCode::CorruptDelta);
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous file");
    assert_exit(
        &decode(&fixture("sample-v1/target.safetensors"), &delta(), &out),
        ErrorCode::WrongBase,
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous file");
    assert_no_part_file(dir.path());

    let r = decode(&base(), &delta(), &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), target());
    // Renamed over the old file, not rewritten in place.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert_ne!(std::fs::metadata(&out).unwrap().ino(), inode);
    }
    assert_eq!(names(dir.path()), ["corrupt.zld", "out.safetensors"]);
}

#[test]
fn write_atomically_removes_its_temporary_file_on_error_and_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    std::fs::write(&out, b"old").unwrap();

    // More than the 8 MiB write buffer, so the temporary file really holds bytes when the
    // writer fails.
    let err = native::write_atomically(&out, |w| {
        w.write_all(&vec![7u8; 9 << 20]).unwrap();
        Err(Error::CorruptDelta {
            what: "the writer failed".into(),
        })
    })
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptDelta);
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["out.bin"]);

    let panicked = std::panic::catch_unwind(|| {
        let _ = native::write_atomically(&out, |w| {
            w.write_all(&vec![7u8; 9 << 20]).unwrap();
            panic!("the writer panicked");
        });
    });
    assert!(panicked.is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["out.bin"]);

    native::write_atomically(&out, |w| {
        w.write_all(b"new")
            .map_err(|e| Error::io("writing out.bin", e))
    })
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"new");
    assert_eq!(names(dir.path()), ["out.bin"]);
}

#[test]
fn write_atomically_into_a_missing_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("missing").join("out.bin");
    let err = native::write_atomically(&out, |_| Ok(())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn write_atomically_onto_a_folder_fails_and_cleans_up() {
    // The rename fails (a file cannot replace a folder): the temporary file must go.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a-folder");
    std::fs::create_dir(&out).unwrap();
    let err = native::write_atomically(&out, |w| {
        w.write_all(b"bytes").map_err(|e| Error::io("writing", e))
    })
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io);
    assert_eq!(names(dir.path()), ["a-folder"]);
    assert!(out.is_dir());
}

#[test]
fn relative_output_path_in_the_current_folder() {
    // A bare file name has an empty parent: the temporary file goes in the current folder.
    // Run through the CLI so the test process's current folder is not changed.
    let dir = tempfile::tempdir().unwrap();
    let r = Command::new(EXE)
        .current_dir(dir.path())
        .arg("decode")
        .arg("--base")
        .arg(base())
        .arg(delta())
        .arg("-o")
        .arg("out.safetensors")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("out.safetensors")).unwrap(),
        target()
    );
    assert_eq!(names(dir.path()), ["out.safetensors"]);
}

/// Bytes that differ at every offset (a misplaced block shows).
fn counting(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn outputs_of_every_size_and_write_pattern_come_out_whole() {
    // Whole 4 KiB blocks go with O_DIRECT where the filesystem takes it (the temp folder's disk)
    // and through the page cache where it does not (tmpfs: /dev/shm); the tail, a partial
    // block, always through the page cache. Sizes around the block and the 8 MiB stage.
    let mut folders = vec![tempfile::tempdir().unwrap()];
    if Path::new("/dev/shm").is_dir() {
        folders.push(tempfile::tempdir_in("/dev/shm").unwrap());
    }
    let stage = 8 << 20;
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        stage - 1,
        stage,
        stage + 1,
        2 * stage + 4096 * 3 + 5,
    ];
    for dir in &folders {
        for &size in &sizes {
            let want = counting(size);
            for (pattern, cuts) in [
                ("one write", vec![size.max(1)]),
                ("odd writes", vec![1, 4095, 7, 3 << 20, 65537]),
            ] {
                let out = dir.path().join(format!("out-{size}"));
                native::write_atomically(&out, |w| {
                    let mut at = 0;
                    for &c in cuts.iter().cycle() {
                        if at >= size {
                            break;
                        }
                        let end = (at + c).min(size);
                        w.write_all(&want[at..end])
                            .map_err(|e| Error::io("writing", e))?;
                        at = end;
                    }
                    Ok(())
                })
                .unwrap();
                let got = std::fs::read(&out).unwrap();
                assert!(
                    got == want,
                    "{} bytes, {pattern}, in {}",
                    size,
                    dir.path().display()
                );
            }
        }
        assert_no_part_file(dir.path());
    }
}

#[test]
fn a_batch_puts_its_files_in_place_only_when_committed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("sub/b.bin"));
    let bytes = |n: usize| {
        move |w: &mut (dyn std::io::Write + Send)| {
            w.write_all(&counting(n))
                .map_err(|e| Error::io("writing", e))
        }
    };
    let mut batch = native::Batch::default();
    batch.write(&a, bytes(5000)).unwrap();
    batch.write(&b, bytes(9 << 20)).unwrap();
    assert!(!a.exists() && !b.exists());
    batch.commit().unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), counting(5000));
    assert_eq!(std::fs::read(&b).unwrap(), counting(9 << 20));

    // Dropped before its commit, a batch leaves nothing behind and the files as they were.
    let mut batch = native::Batch::default();
    batch.write(&a, bytes(10)).unwrap();
    batch.write(&b, bytes(10)).unwrap();
    drop(batch);
    assert_eq!(std::fs::read(&a).unwrap(), counting(5000));
    assert_no_part_file(dir.path());
    assert_no_part_file(&dir.path().join("sub"));
}
