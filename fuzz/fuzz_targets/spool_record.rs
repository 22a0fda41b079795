//! Call-analytics spool files as found on disk after a crash: `call.json`,
//! `records.jsonl`, `ended.json` and a torn `audio.pcm`, read and then
//! recovered. Every outcome is a value or a typed error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_analytics::spool::CallFiles;
use roomkit_fuzz::{fields, scratch_dir};

fuzz_target!(|data: &[u8]| {
    let parts = fields(data, 4);
    let dir = scratch_dir().join("call");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let files = ["call.json", "records.jsonl", "ended.json", "audio.pcm"];
    for (name, bytes) in files.iter().zip(&parts) {
        if std::fs::write(dir.join(name), bytes).is_err() {
            return;
        }
    }
    let call = CallFiles::new(&dir);
    let _ = call.end();
    let _ = call.records();
    let _ = call.export_log("fuzz").load();
    let len = call.audio_len();
    let _ = call.read_audio(len / 2, (len / 4) as usize);
    if let Ok(meta) = call.meta() {
        let _ = call.finalize_crashed(&meta);
        let _ = call.end();
    }
});
