//! A small tmpfs for disk-full tests: mounted on a fresh directory,
//! filled on demand with a filler file until writes fail with `ENOSPC`,
//! emptied again, and unmounted when the guard is dropped (also when the
//! test panics).
//!
//! Mounting needs root (CI runs as root). A test that needs a full disk
//! must not pass without one, so [`Tmpfs::mount`] panics with a message
//! saying why the file system could not be mounted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A mounted tmpfs, unmounted (and its directory removed) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` KiB on a new directory under the
    /// system temporary directory.
    ///
    /// # Panics
    /// When the mount fails (not root, no `mount` command, no tmpfs
    /// support): a disk-full test cannot run without it and must not pass.
    pub fn mount(size_kib: u64) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "roomkit-tmpfs-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_kib}k,mode=0755"))
            .arg("tmpfs")
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let _ = std::fs::remove_dir(&dir);
                panic!(
                    "this disk-full test needs a small tmpfs and cannot mount one on {} \
                     (run the tests as root, with permission to mount): {}",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                panic!("this disk-full test needs the `mount` command to create a tmpfs: {e}");
            }
        }
        let filler = dir.join("filler.bin");
        Self { dir, filler }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills the file system: appends to a filler file until a write fails
    /// with "no space left on device". Returns the filler's size.
    ///
    /// # Panics
    /// When a write fails for another reason.
    pub fn fill(&self) -> u64 {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .unwrap_or_else(|e| panic!("cannot open the filler file: {e}"));
        let block = vec![0x5au8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_enospc(&e) => break,
                Err(e) => panic!("filling the tmpfs failed: {e}"),
            }
        }
        // Whatever is left is smaller than a block: take it byte by byte.
        loop {
            match f.write(&block[..1]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_enospc(&e) => break,
                Err(e) => panic!("filling the tmpfs failed: {e}"),
            }
        }
        let _ = f.sync_all();
        std::fs::metadata(&self.filler).map_or(0, |m| m.len())
    }

    /// Removes the filler file: the space is back.
    pub fn free(&self) {
        match std::fs::remove_file(&self.filler) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove the filler file: {e}"),
        }
    }

    /// True when writing one more byte to a new file fails with ENOSPC.
    pub fn is_full(&self) -> bool {
        let probe = self.dir.join(".probe");
        let full = match File::create(&probe).and_then(|mut f| f.write_all(&[0u8; 4096])) {
            Ok(()) => false,
            Err(e) => is_enospc(&e),
        };
        let _ = std::fs::remove_file(&probe);
        full
    }
}

/// True for "no space left on device".
pub fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let _ = std::fs::remove_dir(&self.dir);
        } else {
            eprintln!("could not unmount the test tmpfs at {}", self.dir.display());
        }
    }
}
