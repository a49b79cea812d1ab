//! Service definitions that keep a homebase process running: a systemd user unit (Linux) and
//! a launchd agent (macOS). Used for the host's daemon (`setup`) and the laptop's tunnel
//! (`tunnel --install`). Both are generated on every OS so that both are tested here.

use anyhow::{Context, Result};

/// What to run and how to describe it.
pub struct Service<'a> {
    /// systemd unit description; launchd label (`dev.homebase.daemon`).
    pub description: &'a str,
    pub label: &'a str,
    /// The program and its arguments.
    pub args: &'a [String],
    /// systemd `After=` units.
    pub after: &'a str,
    /// launchd's log file.
    pub log: &'a str,
}

fn quote(arg: &str) -> String {
    if arg.contains([' ', '"', '\\']) {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        arg.to_string()
    }
}

/// The open-file limit the service managers give homebase's processes.
const NOFILE: u64 = homebase_proto::sys::NOFILE;

/// A unit that restarts the process whenever it exits.
pub fn systemd_unit(s: &Service) -> String {
    let exec: Vec<String> = s.args.iter().map(|a| quote(a)).collect();
    format!(
        "[Unit]\nDescription={}\nAfter={}\nWants=network-online.target\n\n[Service]\nExecStart={}\nRestart=always\nRestartSec=2\nLimitNOFILE={NOFILE}\nEnvironment=HOMEBASE_COLOR=never\n\n[Install]\nWantedBy=default.target\n",
        s.description,
        s.after,
        exec.join(" ")
    )
}

/// An agent that starts at login (RunAtLoad) and is restarted whenever it exits (KeepAlive).
pub fn launchd_plist(s: &Service) -> Result<Vec<u8>> {
    let mut d = plist::Dictionary::new();
    d.insert("Label".into(), s.label.into());
    d.insert(
        "ProgramArguments".into(),
        plist::Value::Array(s.args.iter().map(|a| a.as_str().into()).collect()),
    );
    d.insert("RunAtLoad".into(), true.into());
    d.insert("KeepAlive".into(), true.into());
    d.insert("ThrottleInterval".into(), 5.into());
    // launchd's default is 256 open files: a few hundred idle connections would starve the
    // daemon's engine connection
    let mut limits = plist::Dictionary::new();
    limits.insert("NumberOfFiles".into(), NOFILE.into());
    d.insert(
        "SoftResourceLimits".into(),
        plist::Value::Dictionary(limits.clone()),
    );
    d.insert(
        "HardResourceLimits".into(),
        plist::Value::Dictionary(limits),
    );
    d.insert("StandardOutPath".into(), s.log.into());
    d.insert("StandardErrorPath".into(), s.log.into());
    let mut env = plist::Dictionary::new();
    env.insert("HOMEBASE_COLOR".into(), "never".into());
    // launchd starts agents with a bare PATH; Homebrew's docker and colima live here
    env.insert(
        "PATH".into(),
        "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin".into(),
    );
    d.insert("EnvironmentVariables".into(), plist::Value::Dictionary(env));
    let mut out = Vec::new();
    plist::Value::Dictionary(d)
        .to_writer_xml(&mut out)
        .context("cannot write the launchd plist")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_managers_run_and_restart_the_process() {
        let args = vec![
            "/Users/me/.homebase/bin/homebase".to_string(),
            "-C".into(),
            "/Users/me/my stack".into(),
            "tunnel".into(),
        ];
        let s = Service {
            description: "homebase tunnel",
            label: "dev.homebase.tunnel.x",
            args: &args,
            after: "network-online.target",
            log: "/tmp/t.log",
        };
        let unit = systemd_unit(&s);
        assert!(
            unit.contains(
                "ExecStart=/Users/me/.homebase/bin/homebase -C \"/Users/me/my stack\" tunnel\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("Restart=always"));
        assert!(unit.contains("LimitNOFILE=8192\n"), "{unit}");
        let v: plist::Value = plist::from_bytes(&launchd_plist(&s).unwrap()).unwrap();
        let d = v.as_dictionary().unwrap();
        assert_eq!(d["Label"].as_string(), Some("dev.homebase.tunnel.x"));
        assert_eq!(d["KeepAlive"].as_boolean(), Some(true));
        assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
        let limits = d["SoftResourceLimits"].as_dictionary().unwrap();
        assert_eq!(limits["NumberOfFiles"].as_unsigned_integer(), Some(8192));
        let got: Vec<&str> = d["ProgramArguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_string().unwrap())
            .collect();
        assert_eq!(got, args);
    }
}
