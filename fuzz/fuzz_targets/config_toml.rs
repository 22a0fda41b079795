//! The `roomkit serve` configuration file: the input is written to a file
//! and loaded exactly as the command loads it, by the `roomkit` library's
//! own loader. Every outcome is settings or a `ConfigError`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit::config;
use roomkit_fuzz::scratch_dir;

/// An environment with no variables set.
struct NoEnv;

impl config::Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
}

/// An environment that sets every variable.
struct FullEnv;

impl config::Env for FullEnv {
    fn var(&self, name: &str) -> Option<String> {
        Some(format!("fuzz-{name}"))
    }
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_dir().join("roomkit.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let overrides = config::Overrides::default();
    let _ = config::load(Some(&path), &overrides, &NoEnv);
    let _ = config::load(Some(&path), &overrides, &FullEnv);
});
