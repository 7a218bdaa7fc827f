//! `mkimage power` and `mkimage reprovision` against a lab of real and
//! broken BMCs at once, no VM: OpenIPMI's `ipmi_sim` (a good one, and the
//! same one with a wrong password), sushy-tools' Redfish emulator (fake
//! driver), an IPMI port nothing listens on, one that never answers, and
//! HTTP services that answer junk or nothing. Each broken node gets its own
//! clear error while the good ones do their work; no password shows up in
//! any output, record or page.

use crate::common;
use crate::power_support;
use crate::serve_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mkimage, stderr, stdout};
use power_support::*;

const PASSWORD: &str = "Pa55-lab-7f3c";

/// The lab: two good BMCs (ipmi_sim, sushy) and five broken ones, seven
/// nodes tagged rack1 in a boot config, and the dir `mkimage` serves.
struct Lab {
    dir: PathBuf,
    served: PathBuf,
    boot: PathBuf,
    sim: IpmiSim,
    sushy: Sushy,
    _silent: std::net::UdpSocket,
    // Last: the dir goes after the BMCs that run in it have stopped.
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let sim = IpmiSim::start(&dir, PASSWORD, None);
        let sushy = Sushy::start(&dir, "admin", PASSWORD, "SUSHY_EMULATOR_FAKE_DRIVER = True");
        let closed = free_port();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let junk = fake_http(Some("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html>not redfish</html>\r\n"));
        let mute = fake_http(None);
        credentials(&dir, &format!("lab: {{username: admin, password: '{PASSWORD}'}}\nwrong: {{username: admin, password: not-it}}\n"));
        let served = dir.join("builds");
        std::fs::create_dir_all(&served).unwrap();
        let boot = dir.join("boot.yml");
        std::fs::write(
            &boot,
            format!(
                "profiles:\n  - name: discovery\n  - name: rescue\ncredentials_file: bmc.yml\nnodes:\n\
\x20 good-ipmi: {{mac: '52:54:00:00:01:01', tags: [rack1], bmc: {{address: 127.0.0.1, port: {}, protocol: ipmi, credentials: lab, uefi: true}}}}\n\
\x20 good-redfish: {{mac: '52:54:00:00:01:02', tags: [rack1], bmc: {{address: 'http://127.0.0.1:{}', protocol: redfish, credentials: lab}}}}\n\
\x20 bad-password: {{mac: '52:54:00:00:01:03', tags: [rack1], bmc: {{address: 127.0.0.1, port: {}, credentials: wrong}}}}\n\
\x20 bad-unreachable: {{mac: '52:54:00:00:01:04', tags: [rack1], bmc: {{address: 127.0.0.1, port: {closed}, credentials: lab}}}}\n\
\x20 bad-silent: {{mac: '52:54:00:00:01:05', tags: [rack1], bmc: {{address: 127.0.0.1, port: {}, credentials: lab}}}}\n\
\x20 bad-junk: {{mac: '52:54:00:00:01:06', tags: [rack1], bmc: {{address: 'http://127.0.0.1:{junk}', protocol: redfish, credentials: lab}}}}\n\
\x20 bad-mute: {{mac: '52:54:00:00:01:07', tags: [rack1], bmc: {{address: 'http://127.0.0.1:{mute}', protocol: redfish, credentials: lab}}}}\n",
                sim.port,
                sushy.port,
                sim.port,
                silent.local_addr().unwrap().port(),
            ),
        )
        .unwrap();
        Lab {
            dir,
            served,
            boot,
            sim,
            sushy,
            _silent: silent,
            _tmp: tmp,
        }
    }

    /// `mkimage ARGS` on the lab: the exit code, stdout and stderr.
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = mkimage()
            .args(args)
            .arg("--boot-config")
            .arg(&self.boot)
            .arg("--dir")
            .arg(&self.served)
            .args(["--bmc-timeout", "3"])
            .output()
            .unwrap();
        (o.status.code(), stdout(&o), stderr(&o))
    }

    /// The Redfish system's path and its resource.
    fn redfish_system(&self) -> (String, serde_json::Value) {
        let system = self.sushy.get("admin", PASSWORD, "/redfish/v1/Systems");
        let system = system["Members"][0]["@odata.id"]
            .as_str()
            .unwrap()
            .to_string();
        let now = self.sushy.get("admin", PASSWORD, &system);
        (system, now)
    }
}

#[test]
fn power_against_good_and_broken_bmcs_gives_one_clear_line_per_node() {
    let lab = Lab::start();
    power_on_the_rack_gives_one_line_per_node(&lab);
    // `status` and `off` by name and glob.
    let (code, out, _) = lab.run(&["power", "good-*", "off"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "good-ipmi: off\ngood-redfish: off\n")
    );
    assert_eq!(lab.redfish_system().1["PowerState"], "Off");
    let out = reprovision_the_rack_fails_each_bad_node_at_its_bmc(&lab);
    // A profile the boot config lacks is refused before any BMC is asked.
    let (code, _, err) = lab.run(&["reprovision", "good-ipmi", "--profile", "nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--profile nope") && err.contains("discovery, rescue"),
        "{err}"
    );
    the_page_and_records_show_bmc_errors_never_a_password(&lab, &(out + &err));
    the_credentials_file_must_be_the_owners_alone(&lab);
}

/// `power on` through every BMC of the rack at once.
fn power_on_the_rack_gives_one_line_per_node(lab: &Lab) {
    let started = std::time::Instant::now();
    let (code, out, err) = lab.run(&["power", "tag:rack1", "on"]);
    println!("{out}{err}");
    assert_eq!(code, Some(1), "some nodes failed: exit 1\n{out}{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .to_string()
    };
    assert_eq!(line("good-ipmi"), "good-ipmi: on");
    assert_eq!(line("good-redfish"), "good-redfish: on");
    for (node, want) in [
        (
            "bad-password",
            "refused the credentials `wrong` (user admin)",
        ),
        ("bad-unreachable", "unreachable: Connection refused"),
        ("bad-silent", "no answer within 3s"),
        ("bad-junk", "does not answer as Redfish does"),
        ("bad-junk", "not JSON"),
        ("bad-mute", "no answer within 3s"),
    ] {
        assert!(
            line(node).contains(want),
            "{node}: want `{want}` in `{}`",
            line(node)
        );
    }
    assert!(err.contains("5 of 7 nodes failed"), "{err}");
    assert!(
        started.elapsed().as_secs() < 45,
        "the nodes were asked concurrently, each bounded by --bmc-timeout"
    );
    assert!(lab
        .sim
        .ipmitool(PASSWORD, &["chassis", "power", "status"])
        .contains("is on"));
    assert_eq!(lab.redfish_system().1["PowerState"], "On");
}

/// Reprovision: the good nodes get their boot device and power, then wait
/// for a machine that does not exist here (the timeout); each bad one fails
/// at its BMC step, at once. Gives its stdout.
fn reprovision_the_rack_fails_each_bad_node_at_its_bmc(lab: &Lab) -> String {
    let (code, out, err) = lab.run(&[
        "reprovision",
        "tag:rack1",
        "--profile",
        "rescue",
        "--wait",
        "script",
        "--timeout",
        "4s",
    ]);
    println!("{out}{err}");
    assert_eq!(code, Some(1));
    for (node, want) in [
        ("good-ipmi", "FAILED at stage none: timed out after 4s"),
        ("good-redfish", "FAILED at stage none: timed out after 4s"),
        (
            "bad-password",
            "FAILED at stage none: boot_from_network: BMC 127.0.0.1",
        ),
        ("bad-unreachable", "unreachable"),
        (
            "bad-junk",
            "FAILED at stage none: boot_from_network: BMC http://127.0.0.1",
        ),
    ] {
        let l = err
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{node}: ")))
            .unwrap_or_else(|| panic!("{node}:\n{err}"));
        assert!(l.contains(want), "{node}: want `{want}` in `{l}`");
    }
    assert!(err.contains("7 of 7 node(s) did not reach script"), "{err}");
    let flags = lab
        .sim
        .ipmitool(PASSWORD, &["chassis", "bootparam", "get", "5"]);
    assert!(
        flags.contains("Force PXE"),
        "the BMC's boot device: {flags}"
    );
    let flags_rf = lab.redfish_system().1["Boot"].clone();
    assert_eq!(flags_rf["BootSourceOverrideTarget"], "Pxe", "{flags_rf}");
    // sushy's fake driver applies a power change 1 to 11 s after it was asked.
    wait_until(
        "the Redfish system on",
        std::time::Duration::from_secs(20),
        &lab.sushy.log,
        || lab.redfish_system().1["PowerState"] == "On",
    );
    // The one-shot profile waits for each node's next boot script.
    let next_boot = lab.served.join(".state/next-boot");
    let next = std::fs::read_to_string(next_boot.join("52-54-00-00-01-01.json")).unwrap();
    assert!(
        next.contains("\"profile\":\"rescue\"") && next.contains("\"once\":true"),
        "{next}"
    );
    assert!(
        !next_boot.join("52-54-00-00-01-03.json").exists(),
        "a node whose BMC failed keeps the boot config's selection"
    );
    out
}

/// The status page and the records show power and BMC errors, never a
/// password (nor in `outputs`, the commands' output).
fn the_page_and_records_show_bmc_errors_never_a_password(lab: &Lab, outputs: &str) {
    let server = serve_support::Server::start(
        &lab.dir,
        &lab.served,
        &["--tftp", "off", "--boot-config", lab.boot.to_str().unwrap()],
    );
    let page = server.get_admin("/").text();
    assert!(
        page.contains("Machines, live") && page.contains("good-ipmi"),
        "{page}"
    );
    assert!(
        page.contains("refused the credentials"),
        "the BMC error on the page"
    );
    let api = server.get_admin("/api/nodes/52:54:00:00:01:03").text();
    assert!(
        api.contains("\"power\"") && api.contains("refused the credentials"),
        "{api}"
    );
    let mut seen = String::new();
    seen += &page;
    seen += &api;
    seen += outputs;
    for f in walk(&lab.served) {
        seen += &std::fs::read_to_string(f).unwrap_or_default();
    }
    assert!(
        !seen.contains(PASSWORD) && !seen.contains("not-it"),
        "a password leaked"
    );
}

/// The credentials file must be the owner's alone.
fn the_credentials_file_must_be_the_owners_alone(lab: &Lab) {
    use std::os::unix::fs::PermissionsExt;
    let bmc = lab.dir.join("bmc.yml");
    std::fs::set_permissions(bmc, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = lab.run(&["power", "good-ipmi", "status"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("mode 0640") && err.contains("chmod 600") && !err.contains(PASSWORD),
        "{err}"
    );
}

#[test]
fn power_commands_check_their_words() {
    let tmp = tempfile::tempdir().unwrap();
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, "profiles: [{name: a}]\nnodes:\n  n1: {mac: '52:54:00:00:02:01', bmc: {address: 127.0.0.1, credentials: lab}}\n  n1x: {mac: '52:54:00:00:02:01'}\n").unwrap();
    let o = mkimage()
        .args(["power", "n1", "status", "--boot-config"])
        .arg(&boot)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("boot.yml:4:") && stderr(&o).contains("node `n1`'s MAC too"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&boot, "profiles: [{name: a}]\nnodes:\n  n1: {mac: '52:54:00:00:02:01', bmc: {address: 127.0.0.1, credentials: lab}}\n").unwrap();
    for (args, want) in [
        (
            &["power", "n1", "reboot"][..],
            "the last word is the action",
        ),
        (&["power", "n9", "on"][..], "`n9` matches no node"),
        (&["power", "n1", "on"][..], "no `credentials_file:`"),
        (&["reprovision", "n1", "--wait", "done"][..], "--wait done"),
        (&["reprovision", "n1", "--timeout", "soon"][..], "--timeout"),
    ] {
        let o = mkimage()
            .args(args)
            .arg("--boot-config")
            .arg(&boot)
            .arg("--dir")
            .arg(tmp.path())
            .output()
            .unwrap();
        let err = stderr(&o);
        let out = stdout(&o);
        assert!(
            err.contains(want) || out.contains(want),
            "{args:?}: want `{want}`:\n{out}{err}"
        );
        assert_ne!(o.status.code(), Some(0), "{args:?}");
    }
    for cmd in ["power", "reprovision"] {
        let o = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(
            o.status.success() && stdout(&o).contains("--boot-config"),
            "{cmd} --help"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `curl -X POST URL -d BODY` with the admin token: the status and the body.
fn post(url: &str, admin: &str, body: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args([
            "-H",
            &format!("Authorization: Bearer {admin}"),
            "-s",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            url,
        ])
        .output()
        .expect("curl");
    let text = stdout(&o);
    let (body, code) = text.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

#[test]
fn power_next_boot_profile_through_the_server_api_is_used_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let served = dir.join("builds");
    std::fs::create_dir_all(&served).unwrap();
    serve_support::build_bootable(&served, b"basefs");
    let sim = IpmiSim::start(dir, PASSWORD, None);
    credentials(
        dir,
        &format!("lab: {{username: admin, password: '{PASSWORD}'}}\n"),
    );
    let boot = dir.join("boot.yml");
    std::fs::write(
        &boot,
        format!("default: discovery\nprofiles:\n  - name: discovery\n    args: mkimage.test=discovery\n  - name: rescue\n    args: mkimage.test=rescue\ncredentials_file: bmc.yml\nnodes:\n  n1:\n    mac: '52:54:00:00:03:01'\n    bmc: {{address: 127.0.0.1, port: {}, credentials: lab}}\n", sim.port),
    )
    .unwrap();
    let server = serve_support::Server::start(
        dir,
        &served,
        &["--tftp", "off", "--boot-config", boot.to_str().unwrap()],
    );
    the_next_boot_api_is_checked_then_used_by_one_script(&server);
    reprovision_through_the_server_sets_the_profile_and_follows_the_boot(
        &server, &served, &boot, &sim,
    );
}

/// The `mkimage.test` argument of the boot script `server` gives `mac`.
fn test_arg_for(server: &serve_support::Server, mac: &str) -> Option<String> {
    let script = serve_support::get(server.http, &format!("/boot.ipxe?mac={mac}")).text();
    serve_support::kernel_arg(&script, "mkimage.test")
}

/// The API: checked, then used by exactly one boot script.
fn the_next_boot_api_is_checked_then_used_by_one_script(server: &serve_support::Server) {
    let url = server.url("");
    let url = url.trim_end_matches('/');
    let admin = server.admin();
    let api = format!("{url}/api/nodes/52:54:00:00:03:02/next-boot");
    let test_arg = || test_arg_for(server, "52:54:00:00:03:02");
    assert_eq!(
        post(&api, "wrong", r#"{"profile": "rescue"}"#).0,
        401,
        "next-boot needs the admin token"
    );
    assert_eq!(post(&api, &admin, r#"{"profile": "nope"}"#).0, 400);
    assert_eq!(post(&api, &admin, r#"{"profil": "rescue"}"#).0, 400);
    assert_eq!(post(&api, &admin, r#"{"profile": "rescue"}"#).0, 200);
    assert_eq!(test_arg().as_deref(), Some("rescue"));
    assert_eq!(test_arg().as_deref(), Some("discovery"), "one-shot");
    assert_eq!(
        post(&api, &admin, r#"{"profile": "rescue", "once": false}"#).0,
        200
    );
    for _ in 0..2 {
        assert_eq!(test_arg().as_deref(), Some("rescue"), "until changed");
    }
    assert_eq!(post(&api, &admin, r#"{"profile": null}"#).0, 200);
    assert_eq!(test_arg().as_deref(), Some("discovery"));
    assert_eq!(
        post(
            &format!("{url}/api/nodes/52:54:00:00:03:02/power"),
            &admin,
            r#"{"state": "sideways"}"#
        )
        .0,
        400
    );
}

/// `reprovision --server`: the profile goes through the API, and the
/// "machine" (this test, asking for its boot script as iPXE would once the
/// BMC powered it on) is followed to the script stage.
fn reprovision_through_the_server_sets_the_profile_and_follows_the_boot(
    server: &serve_support::Server,
    served: &Path,
    boot: &Path,
    sim: &IpmiSim,
) {
    let url = server.url("");
    let child = mkimage()
        .args([
            "reprovision",
            "n1",
            "--profile",
            "rescue",
            "--wait",
            "script",
            "--timeout",
            "60s",
            "--bmc-timeout",
            "3",
            "--server",
            url.trim_end_matches('/'),
            "--admin-token-file",
        ])
        .arg(served.join(".state/admin.token"))
        .arg("--boot-config")
        .arg(boot)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut got = None;
    while start.elapsed() < std::time::Duration::from_secs(60) {
        if std::fs::read_to_string(sim.state.join("calls"))
            .unwrap_or_default()
            .contains("power 1")
        {
            got = test_arg_for(server, "52:54:00:00:03:01");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(
        got.as_deref(),
        Some("rescue"),
        "the machine's first script after the power-on"
    );
    assert!(
        out.contains("n1: power on") && out.contains("n1: ok, at script"),
        "{out}"
    );
    let record = server.get_admin("/api/nodes/52:54:00:00:03:01").text();
    assert!(
        record.contains("\"profile\": \"rescue\"") && record.contains("\"state\": \"on\""),
        "{record}"
    );
    assert!(!record.contains(PASSWORD));
}
