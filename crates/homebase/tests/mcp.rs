//! `homebase mcp` driven by a real MCP client (the official Rust SDK's, over the server's
//! stdio) against the Mac-like test host with its daemon and an agent loop: the tools and
//! their schemas, answers equal to the CLI's, secrets redacted, the `allow` list enforced
//! and read at each call.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::{Duration, Instant};

use homebase_testkit::{Daemon, TestProject, hosts, unique_port};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, ClientRequest, GetPromptRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, Request,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

const SECRET: &str = "tok-9f3b-very-secret";

/// A service that prints its token into its logs, as a careless app would.
const COMPOSE: &str = r#"
services:
  web:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo \"starting with token $$API_TOKEN\"; echo ok > /tmp/up; exec sleep 3600"]
    environment:
      API_TOKEN: ${API_TOKEN}
      MODE: plain
      DATABASE_URL: postgres://app:${DB_PASS}@db:5432/app
      CACHE_URL: redis://cache:lit3ral-pw@cache:6379/0
      SHORT_PIN: ${PIN}
      DOLLAR: ${DOLLAR_PW}
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/up"]
      interval: 1s
      retries: 10
    stop_signal: SIGKILL
"#;

/// A client that keeps the progress notifications it gets.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<String>>>,
    /// `notifications/tools/list_changed` received.
    list_changed: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Each tool the server lists now, with its annotations: what a client shows the user.
async fn listed(client: &Client) -> Vec<Value> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| json!({"name": t.name, "annotations": t.annotations}))
        .collect()
}

/// Waits for one more `tools/list_changed` than `before`.
async fn list_changes_after(recorder: &Recorder, before: usize) {
    for _ in 0..100 {
        if recorder
            .list_changed
            .load(std::sync::atomic::Ordering::SeqCst)
            > before
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no notifications/tools/list_changed after homebase.toml changed");
}

type Client = RunningService<RoleClient, Recorder>;

async fn call(client: &Client, tool: &str, args: Value) -> Value {
    let mut params = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let result = client.call_tool(params).await.unwrap();
    serde_json::to_value(result).unwrap()
}

/// The CLI's answer, with the daemon the test runs.
fn homebase(p: &TestProject, state: &str, args: &[&str]) -> String {
    let o = p
        .cmd(args)
        .env("HOMEBASE_DAEMON_STATE", state)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "homebase {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn a_coding_agent_reads_the_stack_and_steers_only_what_it_is_allowed() {
    let hosts = hosts();
    let h = hosts.host(homebase_testkit::MAC);
    let p = TestProject::new(&hosts, h, bin(), "mcp", COMPOSE, "");
    let user = hosts.ssh_ok(h, "echo $(id -u):$(id -g)").trim().to_string();
    let home = hosts.ssh_ok(h, "echo $HOME").trim().to_string();
    let ws = format!("{home}/ws-{}", p.name);
    hosts.ssh_ok(h, &format!("mkdir -p {ws}/agent"));
    let loop_toml = format!(
        "[loops.agent]\nimage = \"hb/busybox:latest\"\ncommand = \"sh -c 'echo iteration $HOMEBASE_ITERATION; sleep 1'\"\nworkspace = \"{ws}/agent\"\nuser = \"{user}\"\nmemory = \"32MiB\"\ntimeout = \"60s\"\npause = \"1s\"\n"
    );
    p.write(
        COMPOSE,
        &format!("[services.web]\nmemory = \"64MiB\"\n\n{loop_toml}"),
    );
    std::fs::write(
        p.dir.path().join(".env"),
        format!("API_TOKEN={SECRET}\nDOLLAR_PW='pa$w0rd-x'\n"),
    )
    .unwrap();
    // values the redaction must catch by what they are, not by their keys' names: from the
    // process environment, a literal in a URL, a short one, one that render rewrites
    let hidden = [("DB_PASS", "dbp4ss-from-env"), ("PIN", "zq9")];
    let o = p
        .cmd(&["deploy", "--timeout", "60"])
        .envs(hidden)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = Daemon {
        bin: bin().to_path_buf(),
        hosts: &hosts,
        host: h,
        state: format!("/tmp/hb-mcp-{}", p.name),
        port: unique_port(),
        project: p.name.clone(),
    };
    hosts.ssh_ok(h, &format!("mkdir -p {}", d.state));
    d.start();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cmd = tokio::process::Command::new(bin()).configure(|c| {
            c.arg("-C")
                .arg(p.dir.path())
                .arg("mcp")
                .env("HOMEBASE_COLOR", "never")
                .env("HOMEBASE_SSH_CONTROL_DIR", p.control_dir())
                .env("HOMEBASE_DAEMON_STATE", &d.state)
                .envs(hidden);
        });
        let recorder = Recorder::default();
        let client = recorder
            .clone()
            .serve(TokioChildProcess::new(cmd).unwrap())
            .await
            .unwrap();

        // Only the reading tools while nothing is allowed, each with an input schema and its
        // annotations; the reading ones with an output schema.
        let tools = client.list_all_tools().await.unwrap();
        insta::assert_json_snapshot!("mcp_tools_allow_nothing", listed(&client).await);
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [
                "status",
                "plan",
                "releases",
                "logs",
                "loop_list",
                "loop_history",
                "loop_logs",
                "backup_list",
            ]
            .into_iter()
            .collect(),
            "{names:?}"
        );
        let logs = tools.iter().find(|t| t.name == "logs").unwrap();
        let schema = serde_json::to_value(&logs.input_schema).unwrap();
        assert_eq!(schema["required"], json!(["service"]), "{schema:#}");
        assert!(schema["properties"]["lines"].is_object(), "{schema:#}");
        let status_tool = tools.iter().find(|t| t.name == "status").unwrap();
        let out_schema = serde_json::to_value(&status_tool.output_schema).unwrap();
        assert!(
            out_schema["properties"]["services"].is_object(),
            "{out_schema:#}"
        );
        assert!(tools.iter().all(|t| t.description.is_some()));

        // status answers what `homebase status --json` answers
        let r = call(&client, "status", json!({})).await;
        assert_ne!(r["isError"], json!(true), "{r:#}");
        let mcp = &r["structuredContent"];
        let cli: Value =
            serde_json::from_str(&homebase(&p, &d.state, &["status", "--json"])).unwrap();
        for key in ["project", "host", "release", "healthy"] {
            assert_eq!(mcp[key], cli[key], "{key}: {mcp:#} vs {cli:#}");
        }
        let services = |v: &Value| -> Vec<(String, String, String)> {
            v["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_string(),
                        s["state"].as_str().unwrap().to_string(),
                        s["limit_bytes"].to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(services(mcp), services(&cli));
        assert_eq!(mcp["healthy"], json!(true), "{mcp:#}");

        // loop_history answers what `homebase loop history --json` answers
        let deadline = Instant::now() + Duration::from_secs(60);
        let history = loop {
            let r = call(
                &client,
                "loop_history",
                json!({"name": "agent", "limit": 5}),
            )
            .await;
            assert_ne!(r["isError"], json!(true), "{r:#}");
            let rows = r["structuredContent"]["iterations"]
                .as_array()
                .unwrap()
                .clone();
            if rows.iter().any(|i| i["outcome"] == "ok") {
                break rows;
            }
            assert!(Instant::now() < deadline, "no finished iteration: {r:#}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let cli: Vec<Value> = serde_json::from_str(&homebase(
            &p,
            &d.state,
            &["loop", "history", "agent", "--limit", "50", "--json"],
        ))
        .unwrap();
        for row in &history {
            let same = cli
                .iter()
                .find(|c| c["n"] == row["n"] && c["run"] == row["run"]);
            let same = same.unwrap_or_else(|| panic!("{row:#} not in the CLI's {cli:#?}"));
            assert_eq!(same["outcome"], row["outcome"]);
            if same["ended"].is_number() {
                assert_eq!(same["ended"], row["ended"]);
            }
        }

        // logs: bounded, and the token the service printed is redacted
        let r = call(&client, "logs", json!({"service": "web", "lines": 10})).await;
        let lines = r["structuredContent"]["lines"].as_array().unwrap();
        assert!(lines.len() <= 10, "{r:#}");
        assert!(
            lines.iter().any(|l| l
                .as_str()
                .unwrap()
                .contains("starting with token <redacted>")),
            "{r:#}"
        );
        assert!(!r.to_string().contains(SECRET), "the secret leaked: {r:#}");
        // numbers and flags as a form-based client sends them: text
        let r = call(&client, "logs", json!({"service": "web", "lines": "3"})).await;
        assert_ne!(r["isError"], json!(true), "{r:#}");
        assert!(
            r["structuredContent"]["lines"].as_array().unwrap().len() <= 3,
            "{r:#}"
        );
        let r = call(&client, "releases", json!({"limit": "1", "unused": null})).await;
        assert_ne!(r["isError"], json!(true), "{r:#}");
        let r = call(&client, "logs", json!({"service": "web", "lines": "three"})).await;
        assert!(
            text_of(&r).contains("`three` is not a whole number"),
            "{r:#}"
        );
        let r = call(&client, "logs", json!({"service": "wbe"})).await;
        assert_eq!(r["isError"], json!(true), "{r:#}");
        assert!(
            text_of(&r).contains("there is no service `wbe`; the services are: web"),
            "{r:#}"
        );

        // the rendered compose file, without the secret
        let res = client
            .read_resource(ReadResourceRequestParams::new("homebase://compose"))
            .await
            .unwrap();
        let res = serde_json::to_value(res).unwrap().to_string();
        assert!(
            res.contains("API_TOKEN") && res.contains("<redacted>"),
            "{res}"
        );
        assert!(!res.contains(SECRET), "the secret leaked: {res}");
        for leak in ["dbp4ss-from-env", "lit3ral-pw", "SHORT_PIN: zq9", "w0rd-x"] {
            assert!(!res.contains(leak), "`{leak}` leaked: {res}");
        }
        assert!(
            res.contains("postgres://app:<redacted>@db:5432/app"),
            "{res}"
        );
        // the type resources/list announces
        assert!(res.contains("\"mimeType\":\"application/yaml\""), "{res}");
        let prompt = client
            .get_prompt(GetPromptRequestParams::new("diagnose"))
            .await
            .unwrap();
        let prompt = serde_json::to_value(prompt).unwrap().to_string();
        assert!(prompt.contains("## Status (healthy"), "{prompt}");
        assert!(!prompt.contains(SECRET), "the secret leaked: {prompt}");

        // tools that change the host are refused, with the fix, until allowed
        let before = p.host_file("current");
        let r = call(&client, "deploy", json!({})).await;
        assert_eq!(r["isError"], json!(true), "{r:#}");
        let t = text_of(&r);
        assert!(
            t.contains("[mcp]") && t.contains("allow = [\"deploy\"]"),
            "{t}"
        );
        assert_eq!(p.host_file("current"), before, "a refused deploy deployed");
        let r = call(&client, "loop_stop", json!({"name": "agent"})).await;
        assert_eq!(r["isError"], json!(true), "{r:#}");
        assert!(text_of(&r).contains("loop_control"), "{r:#}");

        let toml_path = p.dir.path().join("homebase.toml");
        let toml = std::fs::read_to_string(&toml_path).unwrap();
        let changes = recorder
            .list_changed
            .load(std::sync::atomic::Ordering::SeqCst);
        std::fs::write(
            &toml_path,
            format!("{toml}\n[mcp]\nallow = [\"loop_control\", \"restart\"]\n"),
        )
        .unwrap();
        list_changes_after(&recorder, changes).await;
        insta::assert_json_snapshot!(
            "mcp_tools_allow_loop_control_restart",
            listed(&client).await
        );
        let r = call(&client, "loop_stop", json!({"name": "agent"})).await;
        assert_ne!(r["isError"], json!(true), "{r:#}");
        assert_eq!(r["structuredContent"]["state"], json!("stopped"), "{r:#}");
        let cli: Vec<Value> =
            serde_json::from_str(&homebase(&p, &d.state, &["loop", "ls", "--json"])).unwrap();
        assert_eq!(cli[0]["state"], json!("stopped"), "{cli:#?}");

        let started = |p: &TestProject| {
            String::from_utf8_lossy(
                &hosts
                    .docker(
                        h,
                        &[
                            "inspect",
                            "--format",
                            "{{.State.StartedAt}}",
                            &format!("{}-web-1", p.name),
                        ],
                    )
                    .stdout,
            )
            .to_string()
        };
        let was = started(&p);
        let r = call(&client, "restart", json!({"service": "web"})).await;
        assert_ne!(r["isError"], json!(true), "{r:#}");
        assert_eq!(r["structuredContent"]["healthy"], json!(true), "{r:#}");
        assert_ne!(started(&p), was, "web was not restarted");
        // arguments are values, never flags, and bounded: a service or loop name the child
        // would read as an option, a timeout that would overflow the clock
        for (tool, args, want) in [
            (
                "restart",
                json!({"service": "--config=/etc/other/homebase.toml"}),
                "is not a service name",
            ),
            (
                "restart",
                json!({"service": "web", "timeout_secs": u64::MAX}),
                "out of range",
            ),
            (
                "restart",
                json!({"service": "web", "timeout_secs": 0}),
                "out of range",
            ),
            ("loop_stop", json!({"name": "-h"}), "is not a loop name"),
            (
                "logs",
                json!({"service": "--follow"}),
                "is not a service name",
            ),
        ] {
            let r = call(&client, tool, args.clone()).await;
            assert_eq!(r["isError"], json!(true), "{tool} {args}: {r:#}");
            assert!(text_of(&r).contains(want), "{tool} {args}: {r:#}");
        }
        // still not allowed: rollback
        let r = call(&client, "rollback", json!({})).await;
        assert_eq!(r["isError"], json!(true), "{r:#}");
        assert!(text_of(&r).contains("allow = [\"rollback\"]"), "{r:#}");

        // an allowed deploy, its steps as progress notifications
        std::fs::write(
            &toml_path,
            format!("{toml}\n[mcp]\nallow = [\"loop_control\", \"restart\", \"deploy\"]\n"),
        )
        .unwrap();
        std::fs::write(
            p.dir.path().join("compose.yml"),
            COMPOSE.replace("MODE: plain", "MODE: changed"),
        )
        .unwrap();
        let handle = client
            .send_cancellable_request(
                ClientRequest::CallToolRequest(Request::new(
                    CallToolRequestParams::new("deploy")
                        .with_arguments(json!({"timeout_secs": 60}).as_object().unwrap().clone()),
                )),
                PeerRequestOptions::no_options(),
            )
            .await
            .unwrap();
        let r = serde_json::to_value(handle.await_response().await.unwrap()).unwrap();
        assert_ne!(r["isError"], json!(true), "{r:#}");
        let run = &r["structuredContent"];
        assert_eq!(run["ok"], json!(true), "{r:#}");
        assert_eq!(run["release"]["outcome"], json!("deployed"), "{r:#}");
        assert_ne!(p.host_file("current"), before, "the deploy did not deploy");
        let seen = recorder.progress.lock().unwrap().clone();
        assert!(
            seen.iter().any(|m| m.contains("upload release")),
            "no progress: {seen:?}"
        );
        assert!(!r.to_string().contains(SECRET), "the secret leaked: {r:#}");

        // a release id that would be a flag of the child rolls back nothing
        let changes = recorder
            .list_changed
            .load(std::sync::atomic::Ordering::SeqCst);
        std::fs::write(
            &toml_path,
            format!("{toml}\n[mcp]\nallow = [\"rollback\"]\n"),
        )
        .unwrap();
        list_changes_after(&recorder, changes).await;
        insta::assert_json_snapshot!("mcp_tools_allow_rollback", listed(&client).await);
        let releases_before = homebase(&p, &d.state, &["releases", "--json"]);
        for release in ["--config=/tmp/another/homebase.toml", "-h", "../x"] {
            let r = call(&client, "rollback", json!({"release": release})).await;
            assert_eq!(r["isError"], json!(true), "{release}: {r:#}");
            assert!(
                text_of(&r).contains("is not a release id"),
                "{release}: {r:#}"
            );
        }
        let r = call(&client, "rollback", json!({"timeout_secs": u64::MAX})).await;
        assert!(text_of(&r).contains("out of range"), "{r:#}");
        assert_eq!(
            homebase(&p, &d.state, &["releases", "--json"]),
            releases_before
        );

        client.cancel().await.unwrap();
    });
    d.stop();
    let _ = hosts.ssh(
        h,
        &format!(
            "ids=$(docker ps -aq --filter name=hb-loop-{}-); [ -z \"$ids\" ] || docker rm -f $ids; rm -rf {ws} {}",
            p.name, d.state
        ),
    );
}

/// Where `scripts/testhost install` keeps the real MCP clients.
fn client_cache() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("HB_TESTHOST_CACHE")
            .unwrap_or_else(|_| "/var/cache/homebase-testhost".into()),
    )
}

/// The clients people use, not ours: the official Python SDK (which validates structured
/// results against each tool's output schema) and the MCP Inspector's CLI (which sends what
/// is typed as text). Both list the reading tools, call them with numbers (as numbers and
/// as text), read a resource, and get no error.
#[test]
fn real_mcp_clients_list_and_call_the_tools() {
    let hosts = hosts();
    let h = hosts.host(1);
    let p = TestProject::new(
        &hosts,
        h,
        bin(),
        "mcpreal",
        COMPOSE,
        "[services.web]\nmemory = \"64MiB\"\n",
    );
    std::fs::write(p.dir.path().join(".env"), format!("API_TOKEN={SECRET}\n")).unwrap();
    p.ok(&["deploy", "--timeout", "60"]);
    let python = client_cache().join("mcp-venv/bin/python");
    let script = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

def field(o, snake, camel):
    # the SDK's 1.x names are camelCase, 2.x snake_case
    return getattr(o, snake, None) if hasattr(o, snake) else getattr(o, camel, None)

async def main():
    server = StdioServerParameters(command=sys.argv[1], args=["-C", sys.argv[2], "mcp"], env=json.loads(sys.argv[3]))
    async with stdio_client(server) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            tools = await s.list_tools()
            out = {"tools": sorted(t.name for t in tools.tools)}
            for name, args in [("status", {}), ("releases", {"limit": 2}), ("logs", {"service": "web", "lines": 3}), ("plan", {})]:
                res = await s.call_tool(name, args)
                out[name] = {"isError": bool(field(res, "is_error", "isError")), "structured": field(res, "structured_content", "structuredContent") is not None, "text": res.content[0].text[:300] if res.content else ""}
            res = await s.read_resource("homebase://compose")
            out["compose"] = {"mime": field(res.contents[0], "mime_type", "mimeType"), "text": res.contents[0].text}
            print(json.dumps(out))

asyncio.run(main())
"#;
    let env: std::collections::HashMap<String, String> = p
        .cmd(&[])
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .chain(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .collect();
    let o = std::process::Command::new(&python)
        .args([
            "-c",
            script,
            bin().to_str().unwrap(),
            p.dir.path().to_str().unwrap(),
            &serde_json::to_string(&env).unwrap(),
        ])
        .output()
        .expect("the Python MCP SDK (scripts/testhost install puts it in its cache)");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "python SDK: {text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        v["tools"],
        json!([
            "backup_list",
            "logs",
            "loop_history",
            "loop_list",
            "loop_logs",
            "plan",
            "releases",
            "status"
        ])
    );
    for t in ["status", "releases", "logs", "plan"] {
        assert_eq!(v[t]["isError"], json!(false), "{t}: {v:#}");
        assert_eq!(v[t]["structured"], json!(true), "{t}: {v:#}");
    }
    assert_eq!(v["compose"]["mime"], "application/yaml");
    assert!(!v["compose"]["text"].as_str().unwrap().contains(SECRET));

    // the Inspector's CLI: arguments typed as text
    let inspector = client_cache().join("inspector/node_modules/.bin/mcp-inspector");
    for (tool, args) in [
        ("logs", vec!["service=web", "lines=3"]),
        ("releases", vec!["limit=2"]),
    ] {
        let mut c = std::process::Command::new(&inspector);
        c.args([
            "--cli",
            bin().to_str().unwrap(),
            "-C",
            p.dir.path().to_str().unwrap(),
            "mcp",
        ])
        .args(["--method", "tools/call", "--tool-name", tool]);
        for a in &args {
            c.args(["--tool-arg", a]);
        }
        for (k, v) in &env {
            c.env(k, v);
        }
        let o = c
            .output()
            .expect("the MCP Inspector (scripts/testhost install)");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "inspector {tool} {args:?}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_ne!(v["isError"], json!(true), "inspector {tool}: {v:#}");
    }
}
