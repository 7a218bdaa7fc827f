//! dm-verity hash trees for the basefs.
//!
//! Every netbooted machine downloads the basefs into RAM; hashing all of it
//! with `sha256sum` before the mount costs more than the download itself on
//! a slow CPU. With a dm-verity hash tree appended to the squashfs, the
//! initrd only checks the root hash (from the kernel command line) and the
//! kernel verifies each block as it is read — so tampering after the
//! download is caught too, and blocks never read are never hashed.
//!
//! The format is fixed so builds stay deterministic and the init needs no
//! parameters but two: dm-verity format 1, sha256, 4096-byte data and hash
//! blocks, no salt, no superblock. The data (the squashfs) is padded with
//! zeros to a block boundary; the tree follows at that offset, its top
//! level first, as the kernel (and `veritysetup format --no-superblock
//! --salt=- --hash-offset=OFFSET`) lays it out.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hex::hex;

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
const DIGEST: usize = 32;
const HASHES_PER_BLOCK: usize = BLOCK as usize / DIGEST;

/// What the init needs to set up the verity device (recorded in
/// `manifest.json`, passed as `basefs.verity=ROOT_HASH:HASH_OFFSET`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verity {
    /// Hex sha256 root of the tree.
    pub root_hash: String,
    /// Byte offset of the tree in the file (= data blocks × 4096).
    pub hash_offset: u64,
}

impl Verity {
    /// The kernel command-line value: `ROOT_HASH:HASH_OFFSET`.
    pub fn cmdline(&self) -> String {
        format!("{}:{}", self.root_hash, self.hash_offset)
    }
}

/// Pad `file` with zeros to a block boundary and append its hash tree.
pub fn append_tree(file: &mut File) -> io::Result<Verity> {
    let len = file.seek(SeekFrom::End(0))?;
    let data_blocks = len.div_ceil(BLOCK).max(1);
    let hash_offset = data_blocks * BLOCK;
    file.write_all(&vec![0u8; (hash_offset - len) as usize])?;
    file.seek(SeekFrom::Start(0))?;
    let leaves =
        block_hashes(&mut io::BufReader::with_capacity(1 << 20, &mut *file).take(hash_offset))?;
    let (levels, root) = tree(leaves);
    file.seek(SeekFrom::Start(hash_offset))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, &mut *file);
    for level in levels.iter().rev() {
        out.write_all(level)?;
    }
    out.flush()?;
    Ok(Verity {
        root_hash: hex(&root),
        hash_offset,
    })
}

/// sha256 of every 4096-byte block a reader yields (its length is a
/// multiple of the block size).
fn block_hashes(reader: &mut impl Read) -> io::Result<Vec<[u8; DIGEST]>> {
    let mut hashes = Vec::new();
    let mut block = vec![0u8; BLOCK as usize];
    loop {
        match reader.read_exact(&mut block) {
            Ok(()) => hashes.push(Sha256::digest(&block).into()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(hashes),
            Err(e) => return Err(e),
        }
    }
}

/// The hash levels, lowest (hashes of the data blocks) first, each a run of
/// zero-padded hash blocks; and the root hash (of the single top block, or
/// of the only data block when there is one).
fn tree(mut hashes: Vec<[u8; DIGEST]>) -> (Vec<Vec<u8>>, [u8; DIGEST]) {
    let mut levels = Vec::new();
    while hashes.len() > 1 {
        let mut level =
            Vec::with_capacity(hashes.len().div_ceil(HASHES_PER_BLOCK) * BLOCK as usize);
        for chunk in hashes.chunks(HASHES_PER_BLOCK) {
            for h in chunk {
                level.extend_from_slice(h);
            }
            level.resize(level.len().next_multiple_of(BLOCK as usize), 0);
        }
        hashes = level
            .chunks(BLOCK as usize)
            .map(|b| Sha256::digest(b).into())
            .collect();
        levels.push(level);
    }
    (levels, hashes.first().copied().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree for `len` pseudo-random bytes, appended to a temp file.
    fn build(len: usize) -> (tempfile::NamedTempFile, Verity) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all(&bytes).unwrap();
        let v = append_tree(f.as_file_mut()).unwrap();
        (f, v)
    }

    #[test]
    fn layout_matches_the_kernels() {
        // 1 block: no hash levels, the root is the block's own hash.
        let (f, v) = build(100);
        assert_eq!(v.hash_offset, BLOCK);
        assert_eq!(f.as_file().metadata().unwrap().len(), BLOCK);
        let mut block = vec![0u8; BLOCK as usize];
        block[..100].copy_from_slice(&std::fs::read(f.path()).unwrap()[..100]);
        assert_eq!(v.root_hash, hex(&Sha256::digest(&block)));
        // 129 blocks: two level-0 hash blocks, one top block stored first.
        let (f, v) = build(129 * BLOCK as usize);
        let all = std::fs::read(f.path()).unwrap();
        assert_eq!(all.len() as u64, (129 + 3) * BLOCK);
        let top = &all[v.hash_offset as usize..][..BLOCK as usize];
        assert_eq!(v.root_hash, hex(&Sha256::digest(top)));
        let first_leaf_block = &all[(v.hash_offset + BLOCK) as usize..][..BLOCK as usize];
        assert_eq!(&top[..DIGEST], Sha256::digest(first_leaf_block).as_slice());
        assert_eq!(
            &first_leaf_block[..DIGEST],
            Sha256::digest(&all[..BLOCK as usize]).as_slice()
        );
    }

    /// `veritysetup verify` (cryptsetup-bin) checks every block of the tree
    /// against the root hash: the reference implementation agrees with ours.
    #[test]
    fn veritysetup_verifies_the_tree() {
        assert!(
            crate::exec::have("veritysetup"),
            "`veritysetup` is missing (the reference for the tree format): apt-get install -y cryptsetup-bin"
        );
        for len in [5000usize, 128 * BLOCK as usize, 300_001 * 7] {
            let (f, v) = build(len);
            let path = f.path().to_string_lossy().to_string();
            let offset = format!("--hash-offset={}", v.hash_offset);
            let blocks = format!("--data-blocks={}", v.hash_offset / BLOCK);
            let args = [
                "verify",
                "--no-superblock",
                "--salt=-",
                "--hash=sha256",
                "--format=1",
                &offset,
                &blocks,
                &path,
                &path,
                &v.root_hash,
            ];
            crate::exec::Cmd::new("veritysetup")
                .args(args)
                .run()
                .unwrap_or_else(|e| panic!("{len} bytes: {e:#}"));
            let mut wrong = v.root_hash.clone().into_bytes();
            wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
            let wrong = String::from_utf8(wrong).unwrap();
            let args = [
                "verify",
                "--no-superblock",
                "--salt=-",
                "--hash=sha256",
                "--format=1",
                &offset,
                &blocks,
                &path,
                &path,
                &wrong,
            ];
            assert!(
                crate::exec::Cmd::new("veritysetup")
                    .args(args)
                    .run()
                    .is_err(),
                "a wrong root hash verified"
            );
        }
    }
}
