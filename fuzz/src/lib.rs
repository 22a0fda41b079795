//! Helpers shared by the fuzz targets: cutting one input into several
//! fields, a scratch directory per process, and a tokio runtime that lives
//! as long as the fuzzer.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Cuts `data` into at most `n` pieces at `0xFF` bytes (the last piece
/// keeps the rest, separators included); missing pieces are empty.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.iter().position(|b| *b == 0xFF) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => break,
        }
    }
    out.push(rest);
    while out.len() < n {
        out.push(&[]);
    }
    out
}

/// The same as [`fields`], each piece as lossy UTF-8.
pub fn text_fields(data: &[u8], n: usize) -> Vec<String> {
    fields(data, n)
        .into_iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// A directory of this process's own, created on first use.
pub fn scratch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("roomkit-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("scratch dir {dir:?}: {e}"));
        dir
    })
    .clone()
}

/// One multi-threaded runtime for the whole fuzzing process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}
