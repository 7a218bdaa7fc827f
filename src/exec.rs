//! The one runner for every external program (debootstrap, apt, qemu…).
//!
//! Every command gets a chosen environment, `/dev/null` (or given bytes) as
//! stdin, its quoted argv logged at debug level, and on failure an error that
//! carries the program, its exit status and the last lines of its output;
//! `retry` runs an attempt again, with backoff, on a failure its caller
//! recognises as passing.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;

/// How many trailing output lines an error keeps.
const TAIL_LINES: usize = 25;

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run `{program}`: {source}{hint}")]
    Spawn {
        program: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", tail_block(tail))]
    Failed {
        command: String,
        status: String,
        tail: String,
    },
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; last lines of its output:\n{}", indent(tail))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// The Debian package that provides a program, for "install X" hints.
fn package_hint(program: &str) -> &'static str {
    match program {
        "debootstrap" => "debootstrap",
        "mmdebstrap" => "mmdebstrap",
        "mksquashfs" | "unsquashfs" => "squashfs-tools",
        "qemu-system-x86_64" => "qemu-system-x86",
        "apt-cacher-ng" => "apt-cacher-ng",
        "nginx" => "nginx",
        "cpio" => "cpio",
        "depmod" | "modinfo" => "kmod",
        "dpkg-deb" => "dpkg",
        "apt-get" | "apt-cache" => "apt",
        _ => "",
    }
}

/// A command to run: program, arguments, environment, optional chroot.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    inherit_env: bool,
    chroot: Option<PathBuf>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    die_with_parent: bool,
}

/// Output of a command that succeeded.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_env: false,
            chroot: None,
            cwd: None,
            stdin: None,
            die_with_parent: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Keep the caller's environment (by default a command gets only PATH,
    /// LANG=C.UTF-8 and what `env` adds).
    pub fn inherit_env(mut self) -> Self {
        self.inherit_env = true;
        self
    }

    /// Run the program chrooted into `root` (with `/` as working directory).
    pub fn chroot(mut self, root: impl AsRef<Path>) -> Self {
        self.chroot = Some(root.as_ref().to_owned());
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Feed these bytes on stdin instead of `/dev/null`.
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Have the kernel send the program SIGTERM when mkimage dies (even by
    /// SIGKILL), so a server or VM it started never outlives it.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// The command as a shell would read it, for logs and errors.
    pub fn display(&self) -> String {
        let mut words = vec![shell_quote(&self.program.to_string_lossy())];
        words.extend(self.args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        let line = words.join(" ");
        match &self.chroot {
            Some(root) => format!("chroot {} {line}", root.display()),
            None => line,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if !self.inherit_env {
            cmd.env_clear();
            cmd.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
            cmd.env("LANG", "C.UTF-8");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let (chroot, die_with_parent) = (self.chroot.clone(), self.die_with_parent);
        if chroot.is_some() || die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (prctl, chroot, chdir) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if die_with_parent {
                        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                    }
                    if let Some(root) = &chroot {
                        nix::unistd::chroot(root)?;
                        nix::unistd::chdir("/")?;
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Run to completion, capturing output; non-zero exit is an error.
    pub fn run(&self) -> Result<Output, ExecError> {
        self.run_with(|_| {})
    }

    /// Run to completion, calling `on_line` for every line of stdout and
    /// stderr as it arrives (for progress), and capturing both.
    pub fn run_with(&self, mut on_line: impl FnMut(&str)) -> Result<Output, ExecError> {
        let shown = self.display();
        tracing::debug!(command = %shown, "run");
        let program = self.program.to_string_lossy().into_owned();
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|source| spawn_error(&program, source))?;

        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let readers = read_lines(&mut child, &tx);
        drop(tx);
        let writer = match (self.stdin.clone(), child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };

        let mut out = Output::default();
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        for (is_stdout, line) in rx {
            on_line(&line);
            tracing::trace!(target: "mkimage::exec::output", "{line}");
            let target = if is_stdout {
                &mut out.stdout
            } else {
                &mut out.stderr
            };
            target.push_str(&line);
            target.push('\n');
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        for r in readers {
            let _ = r.join();
        }
        if let Some(w) = writer {
            let _ = w.join();
        }
        let status = child
            .wait()
            .map_err(|source| spawn_error(&program, source))?;
        if status.success() {
            Ok(out)
        } else {
            Err(ExecError::Failed {
                command: shown,
                status: describe_status(status),
                tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
            })
        }
    }

    /// Spawn without waiting (servers, QEMU): stdin null, output to the given files.
    pub fn spawn(&self, stdout: Stdio, stderr: Stdio) -> Result<std::process::Child, ExecError> {
        tracing::debug!(command = %self.display(), "spawn");
        let program = self.program.to_string_lossy().into_owned();
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        cmd.spawn().map_err(|source| spawn_error(&program, source))
    }
}

/// A thread per output stream of `child` (stdout, then stderr) sending
/// each line to `tx`, `true` for stdout.
fn read_lines(
    child: &mut std::process::Child,
    tx: &mpsc::Sender<(bool, String)>,
) -> Vec<std::thread::JoinHandle<()>> {
    [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .enumerate()
    .map(|(i, stream)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if tx.send((i == 0, line)).is_err() {
                    break;
                }
                buf.clear();
            }
        })
    })
    .collect()
}

fn spawn_error(program: &str, source: std::io::Error) -> ExecError {
    let pkg = package_hint(
        Path::new(program)
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or(program),
    );
    let hint = if source.kind() == std::io::ErrorKind::NotFound && !pkg.is_empty() {
        format!(" (install it: apt-get install -y {pkg})")
    } else {
        String::new()
    };
    ExecError::Spawn {
        program: program.to_string(),
        hint,
        source,
    }
}

/// How often, and how long apart, to retry a failure that passes by itself
/// (a mirror caught mid-sync, a 5xx, a dropped connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    /// The wait before the first retry; each later one waits twice the last.
    pub first_delay: std::time::Duration,
}

impl Retry {
    /// For anything fetched from a Debian mirror: 3 retries, 2 + 4 + 8 = 14 s
    /// of waiting (apt itself has already retried 5xx and connection errors
    /// 3 times, 1 + 2 + 4 s apart, before a command fails).
    pub const MIRROR: Retry = Retry {
        retries: 3,
        first_delay: std::time::Duration::from_secs(2),
    };
    /// No retry: a first failure is the answer.
    pub const NONE: Retry = Retry {
        retries: 0,
        first_delay: std::time::Duration::ZERO,
    };
}

/// What `retry` gave up on: the last error, after how many retries, how
/// long since the first attempt started.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub retries: u32,
    pub elapsed: std::time::Duration,
}

/// Run `attempt` until it succeeds, fails in a way `transient` does not
/// recognise (it returns `None`), or has been retried `policy.retries`
/// times. Each retry is logged with `transient`'s reason and the wait.
pub fn retry<T, E>(
    policy: Retry,
    mut attempt: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> Option<String>,
) -> Result<T, GaveUp<E>> {
    let started = std::time::Instant::now();
    let mut delay = policy.first_delay;
    let mut retries = 0;
    loop {
        let error = match attempt() {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let reason = match transient(&error) {
            Some(reason) if retries < policy.retries => reason,
            _ => {
                return Err(GaveUp {
                    error,
                    retries,
                    elapsed: started.elapsed(),
                })
            }
        };
        retries += 1;
        tracing::warn!(
            "{reason}; retry {retries} of {} in {} s",
            policy.retries,
            delay.as_secs_f64()
        );
        std::thread::sleep(delay);
        delay *= 2;
    }
}

/// "exit status 3" or "killed by signal 9".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Is `program` on PATH?
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Quote a word for display the way a POSIX shell would need it.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_status_and_tail() {
        let err = Cmd::new("sh")
            .args(["-c", "echo one; echo two >&2; exit 3"])
            .run()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("one") && msg.contains("two"), "{msg}");
        assert!(msg.contains("sh -c"), "{msg}");
    }

    #[test]
    fn stdin_bytes_and_clean_env() {
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo \"[$HOME]\""])
            .stdin_bytes("hi\n")
            .run()
            .unwrap();
        assert_eq!(out.stdout, "hi\n[]\n");
    }

    #[test]
    fn missing_program_names_package() {
        let err = Cmd::new("mksquashfs-definitely-missing").run().unwrap_err();
        assert!(err.to_string().contains("cannot run"));
        assert!(
            spawn_error("mksquashfs", std::io::ErrorKind::NotFound.into())
                .to_string()
                .contains("squashfs-tools")
        );
    }

    #[test]
    fn retries_what_passes_and_stops_at_what_does_not() {
        let quick = Retry {
            retries: 3,
            first_delay: std::time::Duration::from_millis(1),
        };
        let mut calls = 0;
        let got = retry(
            quick,
            || {
                calls += 1;
                if calls < 3 {
                    Err("busy")
                } else {
                    Ok(calls)
                }
            },
            |e| Some(e.to_string()),
        );
        assert_eq!(got.unwrap(), 3);
        let mut calls = 0;
        let gave_up = retry(
            quick,
            || -> Result<(), &str> {
                calls += 1;
                Err("busy")
            },
            |e| Some(e.to_string()),
        )
        .unwrap_err();
        assert_eq!((calls, gave_up.retries), (4, 3));
        let mut calls = 0;
        let gave_up = retry(
            quick,
            || -> Result<(), &str> {
                calls += 1;
                Err("404")
            },
            |_| None,
        )
        .unwrap_err();
        assert_eq!((calls, gave_up.retries, gave_up.error), (1, 0, "404"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("--x=1"), "--x=1");
    }
}
