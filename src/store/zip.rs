//! Stored members of a zip file (a PyTorch `.pt`/`.bin` checkpoint keeps each tensor storage as
//! one uncompressed member), so their bytes take part in tensor dedup. Sans-I/O.

use std::ops::Range;

/// The smallest member treated as a tensor (smaller ones stay in the file's literal bytes).
pub const MIN_MEMBER: u64 = 4096;

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as u64)
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
}

/// Whether a file starts like a zip.
pub fn is_zip(prefix: &[u8]) -> bool {
    prefix.starts_with(b"PK\x03\x04")
}

/// Finds the end-of-central-directory record in the file's `tail` (its last bytes, up to
/// 65,557) and returns the central directory's range, or `None` if there is none (or it is a
/// ZIP64 archive, which this reader leaves as plain bytes).
pub fn central_directory(tail: &[u8], file_len: u64) -> Option<Range<u64>> {
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))?;
    let size = u32_at(tail, at + 12)?;
    let offset = u32_at(tail, at + 16)?;
    if size == 0xffff_ffff || offset == 0xffff_ffff {
        return None;
    }
    let end = offset.checked_add(size)?;
    (end <= file_len).then_some(offset..end)
}

/// A stored member: its name and where its local header starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's name.
    pub name: String,
    /// Offset of its local file header.
    pub header: u64,
    /// Its size (stored: compressed and uncompressed sizes are equal).
    pub size: u64,
}

/// The stored (uncompressed) members of at least [`MIN_MEMBER`] bytes listed in a central
/// directory.
pub fn stored_members(cd: &[u8]) -> Vec<Member> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while cd.get(at..at + 4) == Some(b"PK\x01\x02") {
        let (
            Some(method),
            Some(csize),
            Some(usize_),
            Some(nlen),
            Some(xlen),
            Some(clen),
            Some(off),
        ) = (
            u16_at(cd, at + 10),
            u32_at(cd, at + 20),
            u32_at(cd, at + 24),
            u16_at(cd, at + 28),
            u16_at(cd, at + 30),
            u16_at(cd, at + 32),
            u32_at(cd, at + 42),
        )
        else {
            break;
        };
        let name_at = at + 46;
        let Some(name) = cd.get(name_at..name_at + nlen as usize) else {
            break;
        };
        if method == 0
            && csize == usize_
            && csize >= MIN_MEMBER
            && csize != 0xffff_ffff
            && off != 0xffff_ffff
        {
            out.push(Member {
                name: String::from_utf8_lossy(name).into_owned(),
                header: off,
                size: csize,
            });
        }
        at = name_at + (nlen + xlen + clen) as usize;
    }
    out.sort_by_key(|m| m.header);
    out
}

/// Where a member's data starts, from the first 30 bytes of its local header (whose name and
/// extra-field lengths can differ from the central directory's).
pub fn data_start(member: &Member, local_header: &[u8]) -> Option<u64> {
    if !local_header.starts_with(b"PK\x03\x04") {
        return None;
    }
    let nlen = u16_at(local_header, 26)?;
    let xlen = u16_at(local_header, 28)?;
    member.header.checked_add(30 + nlen + xlen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-member stored zip, written by hand.
    fn zip_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut z = Vec::new();
        let n = name.len() as u16;
        z.extend_from_slice(b"PK\x03\x04");
        z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&[0; 4]); // crc (not checked here)
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&3u16.to_le_bytes());
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(b"xyz");
        z.extend_from_slice(data);
        let cd = z.len() as u32;
        z.extend_from_slice(b"PK\x01\x02");
        z.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&[0; 4]);
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&[0; 12]);
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(name.as_bytes());
        let cd_len = z.len() as u32 - cd;
        z.extend_from_slice(b"PK\x05\x06");
        z.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        z.extend_from_slice(&cd_len.to_le_bytes());
        z.extend_from_slice(&cd.to_le_bytes());
        z.extend_from_slice(&[0, 0]);
        z
    }

    #[test]
    fn finds_a_stored_member() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let z = zip_with("archive/data/0", &data);
        assert!(is_zip(&z));
        let cd = central_directory(&z, z.len() as u64).expect("a central directory");
        let members = stored_members(&z[cd.start as usize..cd.end as usize]);
        assert_eq!(members.len(), 1);
        let m = &members[0];
        assert_eq!(m.name, "archive/data/0");
        let start = data_start(m, &z[m.header as usize..]).expect("a local header") as usize;
        assert_eq!(&z[start..start + m.size as usize], &data[..]);
    }

    #[test]
    fn garbage_is_not_a_zip() {
        assert!(central_directory(b"PK\x05\x06", 4).is_none());
        assert!(stored_members(b"PK\x01\x02\xff").is_empty());
        let z = zip_with("a", &[1; 100]);
        let cd = central_directory(&z, z.len() as u64).expect("a central directory");
        assert!(stored_members(&z[cd.start as usize..cd.end as usize]).is_empty());
    }
}
