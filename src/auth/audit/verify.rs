//! `rampart audit verify`: reads the rotated files (oldest first) then `audit.log`, recomputes
//! every line's hash and checks each `prevHash` against the previous line's hash, stopping at
//! the first break. The first line of the oldest file may chain to something other than the
//! genesis value when older rotated files were pruned; that is reported in
//! [`Verified::starts_after`], and `rampart audit verify` treats it as a failure unless the
//! caller accepts pruned history explicitly.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::event::{hex, Event, GENESIS};
use super::writer::{rotated_files, CURRENT};

#[derive(Debug)]
pub struct Verified {
    pub lines: usize,
    pub files: usize,
    /// The `prevHash` the chain starts from when it is not the genesis value.
    pub starts_after: Option<String>,
}

/// The first break: where and what.
#[derive(Debug)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

/// Verifies a directory (rotated files, then `audit.log`) or a single file.
pub fn verify(target: &Path) -> Result<Verified, Finding> {
    let files = if target.is_dir() {
        let mut files = rotated_files(target).map_err(|e| Finding {
            file: target.into(),
            line: 0,
            what: format!("cannot read the directory: {e}"),
        })?;
        let current = target.join(CURRENT);
        if current.exists() {
            files.push(current);
        }
        files
    } else {
        vec![target.to_path_buf()]
    };
    let mut prev: Option<String> = None;
    let mut starts_after = None;
    let mut lines = 0;
    // A line that did not parse, waiting for a ChainResume marker: (file, line number, sha256, len).
    let mut broken: Option<(PathBuf, usize, String, usize)> = None;
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| Finding {
            file: file.clone(),
            line: 0,
            what: format!("cannot read: {e}"),
        })?;
        let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let ends_with_newline = pieces.last().is_some_and(|l| l.is_empty());
        if ends_with_newline {
            pieces.pop();
        }
        for (i, raw) in pieces.iter().enumerate() {
            let n = i + 1;
            let at = |what: String| Finding {
                file: file.clone(),
                line: n,
                what,
            };
            let event: Event = match serde_json::from_slice(raw) {
                Ok(e) => e,
                Err(e) => {
                    if let Some((f, l, _, _)) = broken.take() {
                        return Err(Finding {
                            file: f,
                            line: l,
                            what: "not valid JSON (truncated or edited)".into(),
                        });
                    }
                    let last = i + 1 == pieces.len();
                    broken = Some((file.clone(), n, hex(&Sha256::digest(raw)), raw.len()));
                    if last {
                        let what = if ends_with_newline {
                            format!("last line is not valid JSON: {e}")
                        } else {
                            "last line is not valid JSON (truncated)".into()
                        };
                        return Err(at(what));
                    }
                    continue;
                }
            };
            if let Some((f, l, sum, len)) = broken.take() {
                let resumes = event.kind == "ChainResume"
                    && event.annotations.get("rampart.dev/broken-tail-sha256") == Some(&sum)
                    && event.annotations.get("rampart.dev/broken-tail-bytes")
                        == Some(&len.to_string());
                if !resumes {
                    return Err(Finding {
                        file: f,
                        line: l,
                        what: "not valid JSON (truncated or edited)".into(),
                    });
                }
            }
            let Some(hash) = event.hash.clone() else {
                return Err(at("no hash field".into()));
            };
            if event.compute_hash() != hash {
                return Err(at("hash mismatch: the line was edited".into()));
            }
            match &prev {
                None => {
                    if event.prev_hash != GENESIS {
                        starts_after = Some(event.prev_hash.clone());
                    }
                }
                Some(p) if *p != event.prev_hash => {
                    return Err(at(
                        "prevHash does not match the previous line's hash: a line before it was deleted, inserted or reordered"
                            .into(),
                    ));
                }
                Some(_) => {}
            }
            prev = Some(hash);
            lines += 1;
        }
    }
    Ok(Verified {
        lines,
        files: files.len(),
        starts_after,
    })
}
