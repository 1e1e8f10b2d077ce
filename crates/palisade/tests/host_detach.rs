//! `palisade up --detach`: it says what it starts and what it waits for, prints the
//! login link once the host serves, and the host is then running for `status` and
//! `doctor`. The detached host is stopped by `palisade down`, and killed by its pid if
//! the test fails first.

mod host_fixture;

use host_fixture::{ok, text, world, World};

/// Stops the detached host whatever happens to the test.
struct Detached<'a>(&'a palisade_testkit::Palisade);

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
        for file in ["run/host.pid", "host.lock"] {
            let pid = std::fs::read_to_string(self.0.home().join(file))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// One host per home: a host whose run folder was removed (its address and token gone)
/// still holds the home, so a second `up` on another port is refused, naming it;
/// `status` still finds it and `down` still stops it. (Before, the second host started
/// on the same database, and the first one, stopped later, deleted the second's run
/// files.)
#[test]
fn a_second_host_cannot_start_on_a_home_whose_run_folder_is_gone() {
    let world = world();
    let listen = world.listen.to_string();
    let _stop = Detached(&world.palisade);
    // With --json, what scripts want: the pid and the login link.
    let started = ok(world
        .palisade
        .run(&["--json", "up", "--detach", "--listen", &listen]));
    let started: serde_json::Value = serde_json::from_slice(&started.stdout).unwrap();
    let pid = started["pid"].as_u64().expect("a pid").to_string();
    assert!(started["login_url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("http://{listen}/login?token=")));
    std::fs::remove_dir_all(world.palisade.home().join("run")).unwrap();
    let status = ok(world.palisade.run(&["status"]));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("running (pid {pid})")),
        "{}",
        text(&status)
    );
    let other = format!("127.0.0.1:{}", palisade_testkit::free_port());
    let second = world.palisade.run(&["up", "--detach", "--listen", &other]);
    assert!(
        !second.status.success()
            && String::from_utf8_lossy(&second.stderr)
                .contains(&format!("already running for this home (pid {pid})")),
        "{}",
        text(&second)
    );
    // The lock is the home folder itself: removing the pid file beside it frees
    // nothing (a foreground start, which takes the lock itself, is refused too).
    let pid_file = world.palisade.home().join("host.lock");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    let third = world.palisade.run(&["up", "--listen", &other]);
    assert!(
        !third.status.success()
            && String::from_utf8_lossy(&third.stderr).contains("already running for this home"),
        "{}",
        text(&third)
    );
    std::fs::write(&pid_file, written).unwrap();
    let stopped = ok(world.palisade.run(&["--json", "down"]));
    let stopped: serde_json::Value = serde_json::from_slice(&stopped.stdout).unwrap();
    assert_eq!(stopped["pid"].to_string(), pid, "{stopped}");
    let again = ok(world.palisade.run(&["--json", "down"]));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["running"], false);
}

#[test]
fn up_detach_says_what_it_waits_for_and_the_host_then_runs() {
    let world = world();
    let listen = world.listen.to_string();
    let ca = world.ca.pem_path().to_str().unwrap().to_string();
    let _stop = Detached(&world.palisade);
    let started = ok(world.palisade.run(&[
        "up",
        "--detach",
        "--listen",
        &listen,
        "--upstream-ca",
        &ca,
        "--allow-local-upstream",
        "localhost",
    ]));
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert!(
        stderr.contains("started the host in the background (pid")
            && stderr.contains(&format!("waiting until it serves http://{listen}")),
        "{}",
        text(&started)
    );
    let stdout = String::from_utf8_lossy(&started.stdout);
    assert!(
        stdout.contains(&format!("http://{listen}/login?token=")),
        "{}",
        text(&started)
    );
    let doctor = world.palisade.run(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        report.contains("ok   host     running (pid") && report.contains(&listen),
        "{}",
        text(&doctor)
    );
    ok(world.palisade.run(&["down"]));
}

/// A detached start that fails says why on the terminal, not only in the log: with an
/// `--upstream-ca` file that does not exist the host exits at once, and `up --detach`
/// exits 1 with the host's own one-line cause. (Before: only "the host exited during
/// startup; see logs/host.log".)
#[test]
fn a_failed_detached_start_says_why() {
    let world = world();
    let listen = world.listen.to_string();
    let _stop = Detached(&world.palisade);
    let missing = world.palisade.home().join("no-such-ca.pem");
    let failed = world.palisade.run(&[
        "up",
        "--detach",
        "--listen",
        &listen,
        "--upstream-ca",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let cause = stderr
        .lines()
        .find(|line| line.contains("the host exited during startup"))
        .unwrap_or_else(|| panic!("{}", text(&failed)));
    assert!(cause.contains("no-such-ca.pem"), "{}", text(&failed));
}

/// A model key given as `ANTHROPIC_API_KEY` is not kept in the host's environment,
/// where `/proc/PID/environ` would show it for the host's whole life and every program
/// it starts (mkfs, mount, podman) would inherit it.
#[test]
fn a_model_key_in_the_environment_leaves_the_hosts_environment() {
    const KEY_IN_ENV: &str = "sk-ant-env-3b9e51-NEVER-IN-ENVIRON";
    let world = world();
    let world = World {
        palisade: world.palisade.env("ANTHROPIC_API_KEY", KEY_IN_ENV),
        ..world
    };
    let host = world.up();
    let environ = std::fs::read(format!("/proc/{}/environ", host.id())).expect("environ");
    let found = environ
        .split(|b| *b == 0)
        .any(|entry| String::from_utf8_lossy(entry).contains(KEY_IN_ENV));
    let mut host = host;
    world.stop(&mut host);
    assert!(!found, "the host's environment kept the model key");
    // A model key is stored already (the world's): the one given is not used, and the
    // host says so instead of leaving the user to think it replaced the stored one.
    assert!(
        host.stderr().contains("ANTHROPIC_API_KEY was not used"),
        "{}",
        host.stderr()
    );
}

/// A host killed with -9 leaves its run/host.json behind, and the pid in it may be
/// another process's by now: no host holds the home's lock, so `status` says nothing
/// runs and `down` signals nobody. (Before, `down` sent that process SIGTERM.)
#[test]
fn a_dead_hosts_leftover_pid_is_nobodys_to_signal() {
    let world = world();
    let listen = world.listen.to_string();
    let _stop = Detached(&world.palisade);
    ok(world.palisade.run(&["up", "--detach", "--listen", &listen]));
    let info_path = world.palisade.home().join("run/host.json");
    let pid: i32 = std::fs::read_to_string(world.palisade.home().join("run/host.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        palisade_testkit::wait_until(std::time::Duration::from_secs(10), || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        }),
        "the host did not die"
    );
    // The pid in the leftover file is now an unrelated process's.
    let mut bystander =
        palisade_testkit::ChildGuard::spawn(std::process::Command::new("sleep").arg("300"))
            .unwrap();
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    info["pid"] = bystander.id().into();
    std::fs::write(&info_path, info.to_string()).unwrap();
    std::fs::write(
        world.palisade.home().join("run/host.pid"),
        bystander.id().to_string(),
    )
    .unwrap();
    let status = world.palisade.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("not running"),
        "{}",
        text(&status)
    );
    let down = ok(world.palisade.run(&["down"]));
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("not running"),
        "{}",
        text(&down)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "down signalled an unrelated process"
    );
}

/// An agent whose model server is at a local address agents may not reach would have
/// every message refused: `up` and `doctor --online` say so, with the command that
/// allows it, which is in force at once (no restart) and remembered, so the next start
/// says nothing. (Before, a start without the flag a working setup had broke it
/// without a word, and the only cure was a restart with the flag.)
#[test]
fn a_start_that_does_not_allow_an_agents_local_model_server_says_so() {
    let world = world();
    ok(world.palisade.run(&[
        "agents",
        "edit",
        "helper",
        "--base-url",
        "https://127.0.0.1:9",
    ]));
    let key = world
        .palisade
        .write_file("local-key.txt", "sk-local-doctor");
    ok(world.palisade.run(&[
        "secrets",
        "create",
        "--name",
        "local",
        "--host-pattern",
        "127.0.0.1:9",
        "--inject",
        "anthropic",
        "--agent",
        "helper",
        "--value-file",
        key.to_str().unwrap(),
    ]));
    let listen = world.listen.to_string();
    let _stop = Detached(&world.palisade);
    let started = ok(world.palisade.run(&["up", "--detach", "--listen", &listen]));
    let stderr = String::from_utf8_lossy(&started.stderr).into_owned();
    assert!(
        stderr.contains("agent helper's model server 127.0.0.1 (port 9) is a local address")
            && stderr.contains("`palisade vault local allow 127.0.0.1:9`"),
        "{stderr}"
    );
    // `doctor --online` says the same, not to check the key.
    let doctor = world.palisade.run(&["doctor", "--online"]);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains("allow it with `palisade vault local allow 127.0.0.1:9`")
            && !report.contains("rotate"),
        "{report}"
    );
    // Allowed while the host runs: in force at once. Nothing listens there, and doctor
    // now says that.
    ok(world
        .palisade
        .run(&["vault", "local", "allow", "127.0.0.1:9"]));
    let doctor = world.palisade.run(&["doctor", "--online"]);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains("nothing answered at its base URL https://127.0.0.1:9")
            && !report.contains("rotate"),
        "{report}"
    );
    // Remembered: the next start has nothing to warn about.
    ok(world.palisade.run(&["down"]));
    let listen = format!("127.0.0.1:{}", palisade_testkit::free_port());
    let again = ok(world.palisade.run(&["up", "--detach", "--listen", &listen]));
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(!stderr.contains("model server"), "{stderr}");
    ok(world.palisade.run(&["down"]));
}
