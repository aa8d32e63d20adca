//! `wasmpod-image`: writes wasm images in every form wasmpod runs, as OCI image layout
//! tarballs for `ctr images import`, or pushed to a registry.
//!
//! ```text
//! wasmpod-image wasm (--name NAME --out TAR | --push HOST/REPO:TAG) --wasm FILE
//!     [--classic | --oci-wasm | --component-layer | --artifact | --artifact-v1]
//!     [--os wasip1|wasip2] [--index] [--path /app.wasm] [--arg X]... [--env K=V]...
//! wasmpod-image busybox --name NAME --out TAR
//! ```
//!
//! The form flags (default `--classic`; see the README's "Images" table):
//! - `--classic`: FILE at `--path` (default `/<file name>`) in a tar layer, entrypoint
//!   naming it, `Cmd` the `--arg`s;
//! - `--oci-wasm` / `--component-layer`: an OCI image config (`os`, `architecture` wasm,
//!   entrypoint `<file name>`) over one non-tar layer of media type `application/wasm` /
//!   `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`;
//! - `--artifact`: the CNCF wasm OCI artifact (`application/vnd.wasm.config.v0+json`,
//!   `application/wasm`), as `wkg oci push` writes it;
//! - `--artifact-v1`: the older `application/vnd.wasm.config.v1+json` +
//!   `application/vnd.wasm.content.layer.v1+wasm` (`wasm-to-oci`).
//!
//! `--os` sets the config's `os` (default `wasip1`, `wasip2` for a component). `--index`
//! pushes the manifest inside an image index naming its platform. `--push` speaks plain
//! HTTP (a local or in-cluster registry); push to a TLS registry with `wkg oci push`.
//! Prints the manifest digest (the index digest with `--index`).
//!
//! Exit codes: 0 success, 1 the image could not be built, written or pushed, 2 bad usage.

// This binary's output is the digest on stdout.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use wasmpod_test::image::{Form, ImageBuilder};
use wasmpod_test::registry::Pusher;

const USAGE: &str = "usage:
  wasmpod-image wasm (--name NAME --out TAR | --push HOST/REPO:TAG) --wasm FILE
      [--classic | --oci-wasm | --component-layer | --artifact | --artifact-v1]
      [--os wasip1|wasip2] [--index] [--path /app.wasm] [--arg X]... [--env K=V]...
  wasmpod-image busybox --name NAME --out TAR";

/// A parsed command line.
#[derive(Debug, Default)]
struct Args {
    command: String,
    name: Option<String>,
    wasm: Option<PathBuf>,
    out: Option<PathBuf>,
    push: Option<String>,
    form: Option<Form>,
    os: Option<String>,
    index: bool,
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
    let wasm = args.command == "wasm";
    while let Some(flag) = argv.next() {
        if wasm && let Some(form) = Form::from_flag(&flag) {
            if args.form.replace(form).is_some() {
                bail!("more than one form flag");
            }
            continue;
        }
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => args.name = Some(value()?),
            "--wasm" if wasm => args.wasm = Some(value()?.into()),
            "--out" => args.out = Some(value()?.into()),
            "--push" if wasm => args.push = Some(value()?),
            "--os" if wasm => args.os = Some(value()?),
            "--index" if wasm => args.index = true,
            "--path" if wasm => args.path = Some(value()?),
            "--arg" if wasm => args.args.push(value()?),
            "--env" if wasm => {
                let pair = value()?;
                let (key, val) = pair
                    .split_once('=')
                    .with_context(|| format!("--env {pair:?}: expected K=V"))?;
                args.env.push((key.to_owned(), val.to_owned()));
            }
            _ => bail!("unexpected argument {flag:?} for {}", args.command),
        }
    }
    if args.name.is_none() {
        // A pushed image is named by where it goes.
        args.name = args.push.clone();
    }
    if args.name.is_none() || (wasm && args.wasm.is_none()) {
        bail!("missing a required option");
    }
    if args.out.is_some() == args.push.is_some() {
        bail!("give exactly one of --out and --push");
    }
    let form = args.form.unwrap_or(Form::Classic);
    if args.path.is_some() && form != Form::Classic {
        bail!("--path is for --classic images (the other forms have no rootfs)");
    }
    if form.is_artifact() && !(args.args.is_empty() && args.env.is_empty()) {
        bail!("--arg/--env have no place in a wasm artifact's config (give them in the pod)");
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
    let file_name = Path::new(wasm_file)
        .file_name()
        .and_then(|n| n.to_str())
        .context("--wasm has no UTF-8 file name")?;
    let module = file_name.strip_suffix(".wasm").unwrap_or(file_name);
    let component = bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00][..]);
    let os = args
        .os
        .clone()
        .unwrap_or_else(|| if component { "wasip2" } else { "wasip1" }.to_owned());
    let form = args.form.unwrap_or(Form::Classic);
    let mut builder = match (&args.path, form) {
        (Some(path), Form::Classic) => ImageBuilder::wasm(name, path, bytes).platform(os, "wasm"),
        _ => form.image(&name, module, &os, &bytes),
    };
    if !form.is_artifact() {
        builder = builder.cmd(args.args.iter().cloned());
        for (key, value) in &args.env {
            builder = builder.env(key, value);
        }
    }
    Ok(builder)
}

fn run(args: &Args) -> anyhow::Result<String> {
    let builder = builder(args)?;
    if let Some(out) = &args.out {
        let image = builder
            .write_tar(out)
            .with_context(|| format!("writing {}", out.display()))?;
        return Ok(image.manifest_digest().to_owned());
    }
    let reference = args.push.as_deref().expect("checked by parse");
    let image = builder.build()?;
    Pusher::plain_http()?
        .push(&image, reference, args.index)
        .with_context(|| format!("pushing {reference}"))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("wasmpod-image: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wasmpod-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}
