//! `wasmpod-image`: writes OCI image layout tarballs for `ctr images import`.
//!
//! ```text
//! wasmpod-image wasm --name NAME --wasm FILE --out TAR [--path /app.wasm] [--arg X]... [--env K=V]...
//! wasmpod-image busybox --name NAME --out TAR
//! ```
//!
//! `wasm` puts FILE at `--path` (default `/<file name>`) in a `wasip1/wasm` image whose
//! entrypoint is that path and whose `Cmd` is the `--arg`s. `busybox` packs the host's
//! static busybox into a `linux/<host arch>` image. Both print the manifest digest.
//!
//! Exit codes: 0 success, 1 the image could not be built or written, 2 bad usage.

// This binary's output is the digest on stdout.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use wasmpod_test::image::ImageBuilder;

const USAGE: &str = "usage:
  wasmpod-image wasm --name NAME --wasm FILE --out TAR [--path /app.wasm] [--arg X]... [--env K=V]...
  wasmpod-image busybox --name NAME --out TAR";

/// A parsed command line.
#[derive(Debug, Default)]
struct Args {
    command: String,
    name: Option<String>,
    wasm: Option<PathBuf>,
    out: Option<PathBuf>,
    path: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn parse(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let mut argv = argv.into_iter();
    let mut args = Args {
        command: argv.next().context("missing command")?,
        ..Args::default()
    };
    if !matches!(args.command.as_str(), "wasm" | "busybox") {
        bail!("unknown command {:?}", args.command);
    }
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => args.name = Some(value()?),
            "--wasm" if args.command == "wasm" => args.wasm = Some(value()?.into()),
            "--out" => args.out = Some(value()?.into()),
            "--path" if args.command == "wasm" => args.path = Some(value()?),
            "--arg" if args.command == "wasm" => args.args.push(value()?),
            "--env" if args.command == "wasm" => {
                let pair = value()?;
                let (key, val) = pair
                    .split_once('=')
                    .with_context(|| format!("--env {pair:?}: expected K=V"))?;
                args.env.push((key.to_owned(), val.to_owned()));
            }
            _ => bail!("unexpected argument {flag:?} for {}", args.command),
        }
    }
    if args.name.is_none() || args.out.is_none() || (args.command == "wasm" && args.wasm.is_none())
    {
        bail!("missing a required option");
    }
    Ok(args)
}

fn builder(args: &Args) -> anyhow::Result<ImageBuilder> {
    let name = args.name.clone().expect("checked by parse");
    if args.command == "busybox" {
        return Ok(ImageBuilder::busybox(name)?);
    }
    let wasm_file = args.wasm.as_deref().expect("checked by parse");
    let bytes =
        std::fs::read(wasm_file).with_context(|| format!("reading {}", wasm_file.display()))?;
    let path = match &args.path {
        Some(path) => path.clone(),
        None => {
            let file_name = Path::new(wasm_file)
                .file_name()
                .and_then(|n| n.to_str())
                .context("--wasm has no UTF-8 file name; pass --path")?;
            format!("/{file_name}")
        }
    };
    let mut builder = ImageBuilder::new(name)
        .platform("wasip1", "wasm")
        .entrypoint([path.as_str()])
        .cmd(args.args.iter().cloned())
        .file(&path, bytes, 0o755);
    for (key, value) in &args.env {
        builder = builder.env(key, value);
    }
    Ok(builder)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("wasmpod-image: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = builder(&args).and_then(|builder| {
        let out = args.out.as_deref().expect("checked by parse");
        builder
            .write_tar(out)
            .with_context(|| format!("writing {}", out.display()))
    });
    match result {
        Ok(image) => {
            println!("{}", image.manifest_digest());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wasmpod-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}
