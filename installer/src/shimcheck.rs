//! Proving the installed shim runs on this node before the node is labelled.
//!
//! A shim built against a newer glibc, for another architecture, or copied onto a `noexec`
//! mount installs without a complaint, and containerd's config probe passes: only starting
//! it shows the problem, as every wasm pod scheduled there fails. So after the copy the
//! installer runs the installed file itself, on the host (through `nsenter` from the
//! DaemonSet), in three steps:
//!
//! 1. its ELF header: an ELF executable, for the node's machine (read from the file, so an
//!    emulator registered with `binfmt_misc` cannot hide a wrong architecture);
//! 2. `--version`, logged, so the node's log says which build it runs;
//! 3. `--self-check`: the shim builds its engines and compiles and runs a tiny module.
//!
//! A failure names the cause an operator acts on: the dynamic loader's own message
//! (`version 'GLIBC_2.34' not found`, a missing shared library), the binary's ELF machine
//! against the node's, a missing ELF interpreter, no exec permission or a `noexec` mount, a
//! crash signal, a timeout. [`ShimChecker`] is the seam; [`HostShimCheck`] the real side.

use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::hostfs::HostRoot;

/// Why the shim cannot run here.
#[derive(Debug, thiserror::Error)]
#[error("the shim {} cannot run on this node: {reason}", path.display())]
pub struct ShimCheckError {
    /// Host path of the shim.
    pub path: PathBuf,
    /// The cause.
    pub reason: Reason,
}

/// The causes [`ShimCheckError`] tells apart.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// The file cannot be read.
    #[error("reading it: {0}")]
    Read(#[source] io::Error),
    /// Not an ELF executable at all.
    #[error("it is not an ELF executable")]
    NotElf,
    /// An ELF for another machine.
    #[error("it is built for {binary} (ELF machine {machine}) but the node is {node}")]
    WrongArchitecture {
        /// What the binary is for.
        binary: String,
        /// Its ELF `e_machine`.
        machine: u16,
        /// The node's machine (`uname -m`).
        node: String,
    },
    /// The kernel refused the format (ENOEXEC).
    #[error("the kernel cannot execute it (exec format error): {detail}")]
    ExecFormat {
        /// What the ELF header says.
        detail: String,
    },
    /// EACCES on exec.
    #[error("permission denied executing it: {detail}")]
    Permission {
        /// Mode bits and mount flags.
        detail: String,
    },
    /// ENOENT on exec of a file that exists: its ELF interpreter is missing.
    #[error("its ELF interpreter {interpreter} is missing on the node")]
    NoInterpreter {
        /// `PT_INTERP`, when it has one.
        interpreter: String,
    },
    /// The command could not be started for another reason.
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// It ran and failed: the dynamic loader's or its own message.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// It did not finish in time.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The bound.
        timeout: Duration,
    },
}

/// What the shim said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimReport {
    /// `--version` output.
    pub version: String,
    /// `--self-check` output.
    pub self_check: String,
}

/// Runs the installed shim on the host.
pub trait ShimChecker {
    /// Check the shim at the host path `path`.
    fn check(&self, path: &Path) -> Result<ShimReport, ShimCheckError>;
}

/// The real check.
#[derive(Debug, Clone)]
pub struct HostShimCheck {
    /// The host root (to read the file).
    pub host: HostRoot,
    /// Run through `nsenter` into PID 1's namespaces (the command sees host paths);
    /// otherwise run the installer-side path directly.
    pub nsenter: bool,
    /// Bound on each run.
    pub timeout: Duration,
}

impl ShimChecker for HostShimCheck {
    fn check(&self, path: &Path) -> Result<ShimReport, ShimCheckError> {
        let fail = |reason| ShimCheckError {
            path: path.to_path_buf(),
            reason,
        };
        let local = self.host.join(path);
        let elf = read_elf(&local).map_err(fail)?;
        let node = node_machine();
        if let Some(expected) = machine_for(&node)
            && expected != elf.machine
        {
            return Err(fail(Reason::WrongArchitecture {
                binary: machine_name(elf.machine).to_owned(),
                machine: elf.machine,
                node,
            }));
        }
        let program = if self.nsenter {
            path.to_path_buf()
        } else {
            local.clone()
        };
        let run = |flag: &str| {
            self.run(&program, flag)
                .map_err(|reason| fail(explain(reason, &local, &elf)))
        };
        let version = run("--version")?;
        let self_check = run("--self-check")?;
        Ok(ShimReport {
            version,
            self_check,
        })
    }
}

impl HostShimCheck {
    /// Run `program flag`; its stdout when it exits 0.
    fn run(&self, program: &Path, flag: &str) -> Result<String, Reason> {
        let mut argv: Vec<String> = Vec::new();
        if self.nsenter {
            argv.extend(
                ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"].map(str::to_owned),
            );
        }
        argv.push(program.display().to_string());
        argv.push(flag.to_owned());
        let command = argv.join(" ");
        log::debug!("running {command}");
        let spawn = || {
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        };
        // ETXTBSY: a process forked elsewhere in this one may still hold the just-written
        // file open for a moment.
        let mut tries = 0;
        let mut child = loop {
            match spawn() {
                Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    break other.map_err(|source| Reason::Spawn {
                        command: command.clone(),
                        source,
                    })?;
                }
            }
        };
        // Read both pipes on threads so a chatty child cannot block on a full pipe.
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Reason::Timeout {
                        command,
                        timeout: self.timeout,
                    });
                }
                Err(source) => return Err(Reason::Spawn { command, source }),
            }
        };
        let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        if !status.success() {
            let status = match status.signal() {
                Some(sig) => format!("killed by signal {sig}"),
                None => status.to_string(),
            };
            return Err(Reason::Failed {
                command,
                status,
                stderr: stderr.trim().to_owned(),
            });
        }
        Ok(stdout)
    }
}

/// Turn an exec failure (ours, or `nsenter`'s "failed to execute": same errno, as text)
/// into the cause an operator acts on.
fn explain(reason: Reason, local: &Path, elf: &Elf) -> Reason {
    let errno = match &reason {
        Reason::Spawn { source, .. } => source.raw_os_error(),
        Reason::Failed { stderr, .. } if stderr.contains("failed to execute") => {
            if stderr.contains("Exec format error") {
                Some(ENOEXEC)
            } else if stderr.contains("Permission denied") {
                Some(EACCES)
            } else if stderr.contains("No such file or directory") {
                Some(ENOENT)
            } else {
                None
            }
        }
        _ => None,
    };
    match errno {
        Some(ENOEXEC) => Reason::ExecFormat {
            detail: format!(
                "ELF {}-bit {} for {} (machine {})",
                if elf.class64 { 64 } else { 32 },
                if elf.little_endian { "LSB" } else { "MSB" },
                machine_name(elf.machine),
                elf.machine
            ),
        },
        Some(EACCES) => Reason::Permission {
            detail: permission_detail(local),
        },
        Some(ENOENT) => Reason::NoInterpreter {
            interpreter: elf
                .interpreter
                .clone()
                .unwrap_or_else(|| "(none named)".to_owned()),
        },
        _ => reason,
    }
}

const ENOENT: i32 = 2;
const ENOEXEC: i32 = 8;
const EACCES: i32 = 13;
const ETXTBSY: i32 = 26;

/// Why exec was refused: the mode bits, else the mount's `noexec`.
fn permission_detail(local: &Path) -> String {
    let mode = std::fs::metadata(local)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0);
    if mode & 0o111 == 0 {
        return format!("the file has mode {mode:04o} (no exec permission)");
    }
    match mount_of(local) {
        Some((point, options)) if options.split(',').any(|o| o == "noexec") => {
            format!("its filesystem {point} is mounted noexec ({options})")
        }
        _ => format!(
            "the file has mode {mode:04o}; its filesystem may be mounted noexec, or a security module refuses it"
        ),
    }
}

/// The mount point holding `path` and its per-mount options, from this process's
/// mountinfo (the longest mount point that is a prefix of the canonical path).
fn mount_of(path: &Path) -> Option<(String, String)> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let point = f.nth(4)?;
            let options = f.next()?;
            Some((point.to_owned(), options.to_owned()))
        })
        .filter(|(point, _)| path.starts_with(point))
        .max_by_key(|(point, _)| point.len())
}

/// What the ELF header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// `e_machine`.
    pub machine: u16,
    /// ELFCLASS64.
    pub class64: bool,
    /// ELFDATA2LSB.
    pub little_endian: bool,
    /// `PT_INTERP`, when present.
    pub interpreter: Option<String>,
}

fn read_elf(path: &Path) -> Result<Elf, Reason> {
    let bytes = std::fs::read(path).map_err(Reason::Read)?;
    parse_elf(&bytes).ok_or(Reason::NotElf)
}

/// Parse the header (and `PT_INTERP`) of an ELF executable; `None` when it is not one.
pub fn parse_elf(bytes: &[u8]) -> Option<Elf> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let class64 = match bytes.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little_endian = match bytes.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |off: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(off..off + 2)?.try_into().ok()?;
        Some(if little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |off: usize| -> Option<u64> {
        let b: [u8; 4] = bytes.get(off..off + 4)?.try_into().ok()?;
        Some(u64::from(if little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |off: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(off..off + 8)?.try_into().ok()?;
        Some(if little_endian {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // e_type: ET_EXEC (2) or ET_DYN (3, PIE).
    if !matches!(u16_at(16)?, 2 | 3) {
        return None;
    }
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if class64 {
        (u64_at(32)?, u16_at(54)?, u16_at(56)?)
    } else {
        (u32_at(28)?, u16_at(42)?, u16_at(44)?)
    };
    let mut interpreter = None;
    for i in 0..u64::from(phnum) {
        let Some(ph) = usize::try_from(phoff + i * u64::from(phentsize)).ok() else {
            break;
        };
        const PT_INTERP: u64 = 3;
        if u32_at(ph) != Some(PT_INTERP) {
            continue;
        }
        let (offset, size) = if class64 {
            (u64_at(ph + 8), u64_at(ph + 32))
        } else {
            (u32_at(ph + 4), u32_at(ph + 16))
        };
        let range = offset
            .zip(size)
            .and_then(|(o, s)| Some(usize::try_from(o).ok()?..usize::try_from(o + s).ok()?));
        interpreter = range
            .and_then(|r| bytes.get(r))
            .map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned());
    }
    Some(Elf {
        machine,
        class64,
        little_endian,
        interpreter,
    })
}

/// The node's machine as the kernel names it (`uname -m`).
pub fn node_machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/arch")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// The ELF `e_machine` of native binaries on a node whose `uname -m` is `node`.
pub fn machine_for(node: &str) -> Option<u16> {
    Some(match node {
        "x86_64" => 62,
        "aarch64" | "arm64" => 183,
        "i386" | "i686" | "x86" => 3,
        "riscv64" => 243,
        "ppc64" | "ppc64le" | "powerpc64" => 21,
        "s390x" => 22,
        m if m.starts_with("arm") => 40,
        _ => return None,
    })
}

/// A readable name for an ELF `e_machine`.
pub fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "i386",
        8 => "mips",
        20 => "ppc",
        21 => "ppc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        _ => "an unknown machine",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian executable header for `machine` with one `PT_INTERP`.
    pub(crate) fn elf64(machine: u16, interp: &str) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // LSB
        b[6] = 1; // EV_CURRENT
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let off = b.len() as u64;
        b[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        b[72..80].copy_from_slice(&off.to_le_bytes());
        b[96..104].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
        b.extend_from_slice(interp.as_bytes());
        b.push(0);
        b
    }

    #[test]
    fn elf_header_and_interpreter_are_read() {
        let elf = parse_elf(&elf64(183, "/lib/ld-linux-aarch64.so.1")).unwrap();
        assert_eq!(elf.machine, 183);
        assert!(elf.class64 && elf.little_endian);
        assert_eq!(
            elf.interpreter.as_deref(),
            Some("/lib/ld-linux-aarch64.so.1")
        );
        assert_eq!(parse_elf(b"#!/bin/sh\n"), None);
        assert_eq!(parse_elf(b"\x7fELF"), None);
        // This test binary is an ELF for the machine it runs on.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let me = parse_elf(&me).unwrap();
        assert_eq!(machine_for(&node_machine()), Some(me.machine));
    }

    fn check_file(
        bytes: &[u8],
        mode: u32,
    ) -> (tempfile::TempDir, Result<ShimReport, ShimCheckError>) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        host.write_atomic("/bin/shim", bytes, mode).unwrap();
        let check = HostShimCheck {
            host,
            nsenter: false,
            timeout: Duration::from_secs(10),
        };
        let result = check.check(Path::new("/bin/shim"));
        (dir, result)
    }

    #[test]
    fn nsenters_exec_failures_are_explained_like_ours() {
        let elf = parse_elf(&elf64(183, "/lib/ld-linux-aarch64.so.1")).unwrap();
        let failed = |stderr: &str| Reason::Failed {
            command: "nsenter ... --version".into(),
            status: "exit status: 126".into(),
            stderr: stderr.into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shim");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let reason = explain(
            failed("nsenter: failed to execute /usr/local/bin/shim: Permission denied"),
            &file,
            &elf,
        );
        assert!(
            reason.to_string().contains("no exec permission"),
            "{reason}"
        );
        let reason = explain(
            failed("nsenter: failed to execute /usr/local/bin/shim: Exec format error"),
            &file,
            &elf,
        );
        assert!(reason.to_string().contains("for aarch64"), "{reason}");
        let reason = explain(
            failed("nsenter: failed to execute /usr/local/bin/shim: No such file or directory"),
            &file,
            &elf,
        );
        assert!(
            reason
                .to_string()
                .contains("/lib/ld-linux-aarch64.so.1 is missing"),
            "{reason}"
        );
        // The loader's own message is passed through as it is.
        let loader = "shim: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found";
        assert!(
            explain(failed(loader), &file, &elf)
                .to_string()
                .contains(loader)
        );
    }

    #[test]
    fn wrong_architecture_is_named_without_running_it() {
        let other = if machine_for(&node_machine()) == Some(183) {
            62
        } else {
            183
        };
        let (_d, result) = check_file(&elf64(other, "/lib/ld.so"), 0o755);
        let err = result.unwrap_err();
        assert!(
            matches!(err.reason, Reason::WrongArchitecture { machine, .. } if machine == other),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(machine_name(other)) && text.contains(&node_machine()),
            "{text}"
        );
    }

    #[test]
    fn scripts_and_failing_programs_are_refused_with_their_message() {
        let (_d, result) = check_file(b"#!/bin/sh\necho hi\n", 0o755);
        assert!(matches!(result.unwrap_err().reason, Reason::NotElf));

        // A real executable of this machine that fails: its stderr is passed through.
        let me = std::fs::read("/bin/false").unwrap();
        let (_d, result) = check_file(&me, 0o755);
        let err = result.unwrap_err();
        assert!(matches!(err.reason, Reason::Failed { .. }), "{err}");

        let (_d, result) = check_file(&me, 0o644);
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("mode 0644 (no exec permission)"),
            "{err}"
        );

        // A native ELF whose interpreter does not exist: ENOENT on exec.
        let mut native = elf64(machine_for(&node_machine()).unwrap(), "/nonexistent/ld.so");
        native[16..18].copy_from_slice(&2u16.to_le_bytes());
        let (_d, result) = check_file(&native, 0o755);
        let err = result.unwrap_err();
        assert!(
            err.to_string()
                .contains("ELF interpreter /nonexistent/ld.so is missing"),
            "{err}"
        );
    }
}
