//! Starting with a bad configuration: exit code 2 and one clear message.

use std::process::Command;

use crate::{binary, config_file};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .arg("serve")
        .args(args)
        .env_remove("ROOMKIT_API_KEY")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_2_naming_file_key_and_problem() {
    let path = config_file("[server]\naddr = \"127.0.0.1:0\"\nrate_limit_per_key = \"lots\"\n");
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("server.rate_limit_per_key"), "{err}");

    let path = config_file("[server]\nadr = \"127.0.0.1:0\"\n");
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("adr"), "{err}");

    let path = config_file(
        "[[channels]]\nid = \"s\"\ntype = \"sms\"\nprovider = \"twilio\"\nfrom = \"+1555\"\n",
    );
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("channels[0].account_sid: is required"),
        "{err}"
    );

    // A secret named by a variable that is not set.
    let path = config_file(
        "[[channels]]\nid = \"s\"\ntype = \"sms\"\nprovider = \"twilio\"\nfrom = \"+1555\"\naccount_sid = \"AC1\"\nauth_token_env = \"ROOMKIT_TEST_UNSET_TOKEN\"\n",
    );
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(
        err.contains("channels[0].auth_token_env: ROOMKIT_TEST_UNSET_TOKEN is not set"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");

    let (code, err) = run(&["--config", "/no/such/roomkit.toml"]);
    assert_eq!(code, Some(2), "{err}");

    let (code, err) = run(&["--addr", "not-an-address"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--addr"), "{err}");

    let (code, err) = run(&["--store", "mysql://x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--store"), "{err}");
}

#[test]
fn a_voice_channel_with_an_unknown_provider_exits_2() {
    let path = config_file(
        "[[channels]]\nid = \"v\"\ntype = \"voice\"\ntransport = \"twilio\"\nstt = { provider = \"carrier-pigeon\" }\ntts = { provider = \"carrier-pigeon\" }\n",
    );
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(
        err.contains(
            "channels[0].stt: provider: \"carrier-pigeon\" is not a speech-to-text provider"
        ),
        "{err}"
    );
    let path = config_file(
        "[[channels]]\nid = \"v\"\ntype = \"voice\"\ntransport = \"twilio\"\nstt = { provider = \"x\" }\ntts = { provider = \"x\" }\n[channels.pipeline]\nvad = { provider = \"webrtc\", mode = \"deafening\" }\n",
    );
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("channels[0].pipeline"), "{err}");
}
