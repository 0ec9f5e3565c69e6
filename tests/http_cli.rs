//! `sml run --http` through the binary: the flags reach the server, the real OBIS decoder's values
//! are answered on `/cm?cmnd=Status%2010`, the password file guards every page, and SIGTERM ends
//! the run with exit code 0.

mod common;
mod http_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for};
use http_common::*;

const SCRIPT: &str = ">D\n>M 1\n+1,3,o,0,9600,EON\n\
1,1-0:1.8.0*255(@1,Import,kWh,import,3\n\
1,1-0:32.7.0*255(@1,Voltage,V,volts,1\n#\n";
const TELEGRAM: &[u8] =
    b"/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.0*255(022803.012*kWh)\r\n1-0:32.7.0*255(233.9*V)\r\n!\r\n";

#[test]
fn sml_run_with_http_answers_status_10_behind_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("eon.sml");
    std::fs::write(&script, SCRIPT).unwrap();
    let pw = dir.path().join("web.pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let (mut meter, device) = pty_meter();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("run")
        .arg(&script)
        .arg("--port")
        .arg(format!("1={}", device.display()))
        .args(["--every-telegram", "--http", &port.to_string()])
        .arg("--http-password-file")
        .arg(&pw)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "sml did not listen on 127.0.0.1:{port}"
    );
    send_telegram(&mut meter, TELEGRAM);
    assert_eq!(http_get(addr, "/cm?cmnd=Status%2010", None).0, 401);
    let mut body = String::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            body = http_get(addr, "/cm?cmnd=Status%2010", Some("admin:hunter2")).2;
            body.contains("volts")
        }),
        "{body}"
    );
    assert_eq!(
        without_time(&body),
        r#"{"StatusSNS":{"Time":"T","EON":{"import":22803.012,"volts":233.9}}}"#
    );
    terminate(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is never logged: {stderr}"
    );
}

fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
