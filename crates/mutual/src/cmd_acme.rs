//! `mutual acme ...`: operator commands for the ACME front door of `mutual ca serve --acme`
//! (docs/acme.md). For now External Account Binding keys: the operator makes one per client (or
//! team), hands over the key id and HMAC key, and `ca serve --acme-require-eab` admits only
//! accounts bound with such a key (RFC 8555 §7.3.4).
use std::process::ExitCode;

use mutual_store::AcmeStore;

use crate::ca_args::DirArg;
use crate::runtime::runtime;

#[derive(clap::Subcommand, Debug)]
pub enum AcmeCommand {
    /// External Account Binding keys for `ca serve --acme-require-eab`.
    #[command(subcommand)]
    Eab(EabCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum EabCommand {
    /// Make a key id and HMAC key, store them in the CA's inventory, print them once.
    ///
    /// The HMAC key is shown only here: give it to the ACME client's operator (certbot
    /// --eab-kid KID --eab-hmac-key KEY; lego --eab --kid KID --hmac KEY). Each key binds exactly
    /// one ACME account, at that account's creation.
    Create(EabCreateArgs),
}

#[derive(clap::Args, Debug)]
pub struct EabCreateArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Print {"kid", "hmac_key"} as JSON instead of two KEY=VALUE lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: AcmeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AcmeCommand::Eab(EabCommand::Create(a)) => eab_create(a),
    }
}

fn eab_create(a: EabCreateArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let (kid, key) = mutual_acme::eab::new_key();
    let rt = runtime()?;
    rt.block_on(async {
        let store = mutual_pki::ca::open_store(&dir).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        store.eab_create(&kid, &key, now).await?;
        anyhow::Ok(())
    })?;
    if a.json {
        let v = serde_json::json!({ "kid": kid, "hmac_key": key });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("kid={kid}\nhmac_key={key}");
    }
    eprintln!("the HMAC key is shown only now; it binds one ACME account");
    Ok(ExitCode::SUCCESS)
}
