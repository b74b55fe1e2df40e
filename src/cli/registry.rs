//! Registry commands: `push`, `pull`, `login`, `logout`, printing what docker prints.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};

use super::args::{LoginArgs, LogoutArgs, ProgressMode, PullArgs, PushArgs};
use super::progress::Console;
use super::{CliError, Globals};
use crate::image::Platform;
use crate::progress::{Event, Reporter as _};
use crate::registry::credentials::{self, StoredIn};
use crate::registry::{
    BlobStatus, Client, ClientOptions, Credential, DOCKER_HUB, Progress, PullOptions, PushOptions,
    Reference,
};
use crate::store::Store;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn client(insecure: &[String], credentials: HashMap<String, Credential>) -> Client {
    Client::new(ClientOptions {
        insecure_registries: insecure.to_vec(),
        credentials,
        ..ClientOptions::default()
    })
}

/// Runs a transfer as progress vertex #1 named `name`, so its byte progress shows with the
/// build renderers (live bars on a terminal, plain lines otherwise, on stderr).
fn with_vertex<T>(
    console: &Console,
    name: String,
    work: impl FnOnce(Progress<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    const ID: u64 = 1;
    console.event(Event::Started {
        id: ID,
        name,
        step: None,
    });
    let out = work(Progress {
        reporter: console,
        vertex: ID,
    });
    console.event(match &out {
        Ok(_) => Event::Finished { id: ID },
        Err(e) => Event::Errored {
            id: ID,
            message: format!("{e:#}"),
        },
    });
    out
}

/// Parses a reference, turning docker's error text into a usage error.
fn parse_ref(text: &str) -> anyhow::Result<Reference> {
    Reference::parse(text).map_err(|e| CliError::Usage(format!("{text}: {e}")).into())
}

pub(super) fn push(args: PushArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = Store::open(&globals.root)?;
    // Look the image up by its normalised name first, then as typed (ID or digest).
    let local = Reference::parse(&args.image).ok();
    let record = match local.as_ref().map(|r| store.resolve(&r.to_string())) {
        Some(Ok(rec)) => rec,
        _ => store.resolve(&args.image).with_context(|| {
            format!(
                "An image does not exist locally with the tag: {}",
                args.image
            )
        })?,
    };
    let dest = match (&args.destination, &local) {
        (Some(d), _) => parse_ref(d)?,
        (None, Some(r)) if record.name.as_deref() == Some(r.to_string().as_str()) => r.clone(),
        (None, _) => match &record.name {
            Some(n) => parse_ref(n)?,
            None => bail!(CliError::Usage(format!(
                "{} has no name to push to; give a DESTINATION",
                args.image
            ))),
        },
    };
    println!("The push refers to repository [{}]", dest.name());
    let client = client(&args.insecure_registries, HashMap::new());
    let console = Console::new(ProgressMode::Auto, false);
    let pushed = with_vertex(&console, format!("pushing {dest}"), |progress| {
        runtime()?
            .block_on(crate::registry::push_with_progress(
                &client,
                &store,
                &record.target.digest,
                &dest,
                &PushOptions::default(),
                progress,
            ))
            .map_err(Into::into)
    })?;
    // Docker lists layers only; the config is the first blob.
    for (digest, status) in pushed.blobs.iter().skip(1) {
        let what = match status {
            BlobStatus::Existed => "Layer already exists".to_string(),
            BlobStatus::Mounted { from } => format!("Mounted from {from}"),
            BlobStatus::Uploaded | BlobStatus::Downloaded => "Pushed".to_string(),
        };
        println!("{}: {what}", digest.short());
    }
    eprintln!(
        "blobs: {} already present, {} mounted, {} uploaded",
        pushed.existed, pushed.mounted, pushed.sent
    );
    println!(
        "{}: digest: {} size: {}",
        dest.tag().unwrap_or("<digest>"),
        pushed.digest,
        pushed.size
    );
    Ok(())
}

pub(super) fn pull(args: PullArgs, globals: &Globals) -> anyhow::Result<()> {
    let reference = parse_ref(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| CliError::Usage(e.to_string()))?,
        ),
        None => None,
    };
    if reference.tag() == Some(crate::registry::DEFAULT_TAG)
        && reference.digest().is_none()
        && !args.image.contains(':')
    {
        println!("Using default tag: latest");
    }
    let store = Store::open(&globals.root)?;
    let client = client(&args.insecure_registries, HashMap::new());
    let what = reference
        .tag()
        .map_or_else(|| reference.manifest_ref(), str::to_string);
    println!("{what}: Pulling from {}", reference.repository());
    let console = Console::new(ProgressMode::Auto, false);
    let pulled = with_vertex(&console, format!("pulling {reference}"), |progress| {
        runtime()?
            .block_on(crate::registry::pull_with_progress(
                &client,
                &store,
                &reference,
                &PullOptions { platform },
                progress,
            ))
            .map_err(Into::into)
    })?;
    for (digest, status) in pulled.blobs.iter().skip(1) {
        let what = match status {
            BlobStatus::Downloaded => "Pull complete",
            _ => "Already exists",
        };
        println!("{}: {what}", digest.short());
    }
    println!("Digest: {}", pulled.digest);
    if pulled.downloaded {
        println!(
            "Status: Downloaded newer image for {}",
            reference.familiar()
        );
    } else {
        println!("Status: Image is up to date for {}", reference.familiar());
    }
    println!("{}", pulled.name);
    Ok(())
}

pub(super) fn login(args: LoginArgs, _globals: &Globals) -> anyhow::Result<()> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| DOCKER_HUB.to_string());
    let registry = registry_of(&server);
    if args.password.is_some() && args.password_stdin {
        bail!(CliError::Usage(
            "--password and --password-stdin are mutually exclusive".into()
        ));
    }
    if args.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let stdin = std::io::stdin();
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => {
            bail!(CliError::Usage("--password-stdin needs --username".into()))
        }
        None => prompt(&stdin, "Username: ")?,
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut text)
                .context("reading the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            let _quiet = EchoOff::new();
            let p = prompt(&stdin, "Password: ")?;
            eprintln!();
            p
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!(CliError::Usage(
            "username and password must not be empty".into()
        ));
    }
    let credential = Credential::Basic {
        username: username.clone(),
        password: password.clone(),
    };
    let key = credentials::auth_key(&registry);
    let client = client(
        &args.insecure_registries,
        HashMap::from([(key.clone(), credential)]),
    );
    runtime()?
        .block_on(client.check_login(&registry))
        .with_context(|| format!("login to {key} failed"))?;
    let dir = credentials::docker_config_dir();
    match credentials::store(&dir, &registry, &username, &password)? {
        StoredIn::File(path) => {
            eprintln!(
                "WARNING! Your password will be stored unencrypted in {}.",
                path.display()
            );
        }
        StoredIn::Helper(h) => tracing::debug!("stored through docker-credential-{h}"),
    }
    println!("Login Succeeded");
    Ok(())
}

pub(super) fn logout(args: LogoutArgs, _globals: &Globals) -> anyhow::Result<()> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| DOCKER_HUB.to_string());
    let registry = registry_of(&server);
    let key = credentials::auth_key(&registry);
    if credentials::erase(&credentials::docker_config_dir(), &registry)? {
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(())
}

/// `SERVER` as docker accepts it: a host, `https://host/...`, or Docker Hub's index URL.
fn registry_of(server: &str) -> String {
    let key = credentials::auth_key(server);
    if key == credentials::DOCKER_HUB_AUTH_KEY {
        DOCKER_HUB.to_string()
    } else {
        key.split('/').next().unwrap_or(&key).to_string()
    }
}

fn prompt(stdin: &std::io::Stdin, label: &str) -> anyhow::Result<String> {
    if !stdin.is_terminal() {
        bail!(CliError::Usage(format!(
            "cannot prompt for {} (stdin is not a terminal); use --username and --password-stdin",
            label.trim_end_matches([':', ' '])
        )));
    }
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Turns terminal echo off while a password is typed; restores it when dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then kernel-filled termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes read in `new` on the same fd.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_servers_map_to_registries() {
        assert_eq!(registry_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_of("docker.io"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_of("https://ghcr.io/v2/"), "ghcr.io");
    }
}
