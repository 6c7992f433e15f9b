//! gRPC failure scenario: our daemon reading path infos from our gRPC
//! PathInfoService server, and that server going away. A query through our
//! daemon must then fail with an error naming the snix PathInfoService
//! (never report a path as invalid or missing); once the server is back the
//! very next query succeeds (the channel reconnects by itself). And a server
//! that hangs (SIGSTOP) makes a query fail after `--grpc-timeout`, naming the
//! service, instead of hanging the client.

use super::parity::NOT_THERE;
use crate::ctx::Ctx;
use crate::daemons;
use crate::fixture::Fixture;
use crate::report::{tagged, Report};
use crate::rootfs::{tail, Feature, Output, Rootfs};
use anyhow::{ensure, Result};
use std::time::{Duration, Instant};

pub const NAMES: &[&str] = &["ours-grpc/backend-down", "ours-grpc/backend-hung"];

pub fn run(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, report: &mut Report) {
    type Scenario = fn(&Ctx, &Rootfs, &Fixture) -> Result<String>;
    let scenarios: [(&str, Scenario); 2] = [
        ("ours-grpc/backend-down", backend_down),
        ("ours-grpc/backend-hung", backend_hung),
    ];
    for (name, f) in scenarios {
        let name = tagged(name, &fs.label);
        let mut seen = String::new();
        report.run(&name, || {
            seen = f(ctx, fs, fx)?;
            Ok(())
        });
        if !seen.is_empty() {
            report.note(&name, &format!("the error Nix showed: {}", tail(&seen, 400)));
        }
    }
}

/// The error of a query through our daemon while its backend is unusable.
fn backend_error(o: &Output) -> Result<String> {
    let err = o.stderr();
    ensure!(
        !o.success(),
        "`{}` succeeded with the gRPC server unusable: {}",
        o.desc,
        o.stdout()
    );
    ensure!(
        err.contains("snix PathInfoService"),
        "`{}` failed without naming the snix PathInfoService: {err}",
        o.desc
    );
    ensure!(
        !err.contains("is not valid") && !err.contains("not found"),
        "`{}` reported a path as invalid/missing instead of the backend error: {err}",
        o.desc
    );
    Ok(err)
}

fn backend_hung(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<String> {
    let dir = ctx.fresh_dir(&format!("grpc-hung-{}", fs.suite))?;
    let state = format!("{dir}/state");
    daemons::import_registration(ctx, fs, &fx.root, &state)?;
    let socket = format!("{dir}/ours.sock");
    let server = daemons::start_grpc_server(ctx, fs, &socket, &fx.store_dir(), &state)?;
    let mut client = daemons::start_grpc_client(ctx, fs, &socket, &fx.store_dir(), "1s")?;
    let url = client.url();
    let args = ["nix", "path-info", "--store", &url, &fx.final_out];
    fs.run(&args)?.ok()?;
    server.signal(libc::SIGSTOP);
    let t = Instant::now();
    let o = fs.run(&args);
    let took = t.elapsed();
    server.signal(libc::SIGCONT);
    let err = backend_error(&o?)?;
    // 1 s deadline: well under the 10 s allowed here.
    ensure!(
        took < Duration::from_secs(10),
        "the query took {took:?} against a hung server with --grpc-timeout 1s"
    );
    ensure!(
        client.running(),
        "our daemon exited while the gRPC server hung: {}",
        client.log_tail()
    );
    let o = fs.run(&args)?;
    ensure!(
        o.success() && o.stdout().trim() == fx.final_out,
        "first query after the gRPC server resumed: {}; (error while hung: {})",
        o.failure_text("failed"),
        tail(&err, 300)
    );
    drop(client);
    drop(server);
    Ok(err)
}

fn backend_down(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<String> {
    let dir = ctx.fresh_dir(&format!("grpc-down-{}", fs.suite))?;
    let state = format!("{dir}/state");
    daemons::import_registration(ctx, fs, &fx.root, &state)?;
    let socket = format!("{dir}/ours.sock");
    let server = daemons::start_grpc_server(ctx, fs, &socket, &fx.store_dir(), &state)?;
    let mut client = daemons::start_grpc_client(ctx, fs, &socket, &fx.store_dir(), "5s")?;
    let url = client.url();
    let hash = &fx.final_out["/nix/store/".len().."/nix/store/".len() + 32];
    let q = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut queries = vec![
        q(&["nix", "path-info", "--store", &url, &fx.final_out]),
        q(&["nix", "path-info", "--store", &url, NOT_THERE]),
        q(&["nix-store", "--store", &url, "--check-validity", &fx.final_out]),
        q(&["nix-store", "--store", &url, "--query", "--references", &fx.final_out]),
    ];
    // Nix 2.8 has no command for QueryPathFromHashPart.
    if fs.lacks(Feature::PathFromHashPart).is_none() {
        queries.push(q(&["nix", "store", "path-from-hash-part", "--store", &url, hash]));
    }

    // Up: the query answers.
    let got = fs.run(&queries[0])?.ok()?.stdout();
    ensure!(
        got.trim() == fx.final_out,
        "with the gRPC server up, path-info printed {got:?}"
    );

    // Down: every query fails, naming the service; none calls a path invalid.
    server.stop();
    let mut first = String::new();
    for q in &queries {
        let e = backend_error(&fs.run(q)?)?;
        if first.is_empty() {
            first = e;
        }
    }
    ensure!(
        client.running(),
        "our daemon exited while the gRPC server was down: {}",
        client.log_tail()
    );

    // Back: the very next query succeeds, on the same daemon.
    let server = daemons::start_grpc_server(ctx, fs, &socket, &fx.store_dir(), &state)?;
    let o = fs.run(&queries[0])?;
    ensure!(
        o.success() && o.stdout().trim() == fx.final_out,
        "first query after the gRPC server came back: {}; daemon log: {}; server log: {}",
        o.failure_text("failed"),
        client.log_tail(),
        server.log_tail()
    );
    // And an invalid path is reported as such again.
    let o = fs.run(&queries[1])?.failed()?;
    ensure!(
        o.stderr().contains("is not valid"),
        "{NOT_THERE} after the gRPC server came back: {}",
        o.stderr()
    );
    drop(client);
    drop(server);
    Ok(first)
}
