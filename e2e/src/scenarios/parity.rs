//! Parity scenarios: the same lower store served by Nix's own daemon and by
//! ours, queried by the same Nix client; outputs must be identical byte for
//! byte (JSON: keys sorted; `registrationTime` compared, since our index is
//! imported from Nix's database). Each check also requires Nix's daemon to
//! have answered successfully where a valid store path was asked about, so a
//! check cannot pass by both sides failing. Failing commands compare exit
//! status and stderr where the check says so (`exact_error`), so a dropped
//! connection cannot pass for "is not valid".
//!
//! NAR contents: a `unix://` client (UDSRemoteStore) reads store files itself
//! from its `real` directory for `narFromPath` and `getFSAccessor`, so dumps,
//! `nix store ls`/`cat` and exports run over `ssh-ng://localhost` (a stdio
//! relay to the daemon socket), where Nix's RemoteStore asks NarFromPath; our
//! daemon's request log must then show a NarFromPath for every path concerned
//! (`nar_from`), so the check cannot pass without our NARs.
//!
//! Our daemon runs in two flavours on the same index: reading it directly
//! (`parity/…`, `ours/…`) and as the client of our gRPC PathInfoService
//! server in front of it (`parity-ours-grpc/…`, `ours-grpc/…`). Nix's
//! daemon answers each check once; both flavours are compared with that. The
//! two fields the gRPC flavour cannot carry, `ultimate` and
//! `registrationTime`, are normalised in [`grpc_normalise`] (gRPC flavour,
//! JSON checks only) and reported as notes.
//!
//! With real snix binaries given (`tests/snix/run`), one more gRPC flavour
//! runs the same checks with our daemon in front of a real `snix-store
//! daemon` filled by `snix-store copy` from the lower store
//! (`parity-ours-snix/…`, `ours-snix/…`), normalised as the gRPC flavour.
//!
//! Two more flavours serve an image of the same lower store made by
//! `scripts/mk-lower-image` with this suite's Nix (index from `nix path-info
//! --json --recursive`), with no import and a state dir that must stay
//! absent: the directory form (`parity-ours-image/…`, `ours-image/…`) and the
//! erofs form loop-mounted read-only (`parity-ours-erofs/…`, `ours-erofs/…`).
//! Nothing is normalised for them: path-info JSON carries every field Nix
//! prints. What it cannot carry is realisations, so there (as in the gRPC
//! flavours) the two realisation checks compare with Nix's own daemon over
//! the same store with its realisations removed: the client must end the
//! same way (for an input-addressed output that is Nix's client's own
//! `thisRealisation` assertion, with either daemon).

use super::{normalize_json, same, ssh_ng_url, tree_hash};
use crate::ctx::Ctx;
use crate::daemons::{self, Daemon, Kind};
use crate::fixture::Fixture;
use crate::mounts::Mounted;
use crate::report::{tagged, Report};
use crate::rootfs::{Feature, Output, Rootfs};
use anyhow::{bail, Result};

pub const NAMES: &[&str] = &[
    "parity/path-info-json",
    "parity/path-info-json-all",
    "parity/requisites",
    "parity/referrers",
    "parity/referrers-closure",
    "parity/deriver",
    "parity/valid-derivers",
    "parity/outputs",
    "parity/queries",
    "parity/verify-path",
    "parity/check-validity",
    "parity/path-from-hash-part",
    "parity/invalid-path",
    "parity/dump",
    "parity/store-ls-cat",
    "parity/export",
    "parity/derivation-show",
    "parity/dry-run",
    "parity/realisation",
    "parity/realisation-input-addressed",
    "parity/ssh-ng-path-info-json",
    "ours/refuses-writes",
    "ours/query-missing-unbuilt",
];

/// A path that is valid nowhere.
pub const NOT_THERE: &str = "/nix/store/ffffffffffffffffffffffffffffffff-e2e-not-there";

struct Check {
    name: &'static str,
    /// Commands; `{S}` is replaced by the store URL.
    cmds: Vec<Vec<String>>,
    json: bool,
    /// Nix's daemon must answer every command successfully.
    must_succeed: bool,
    /// Also compare stderr.
    stderr: bool,
    /// Nix's daemon may answer either way (only the comparison counts).
    any: bool,
    /// Also compare the exit code and stderr (store URLs replaced).
    exact_error: bool,
    /// Store paths our daemon must have been asked NarFromPath for (and
    /// answered) while the check ran.
    nar_from: Vec<String>,
    /// Why the client's Nix cannot run this check at all (reported `N/A`).
    not_applicable: Option<String>,
    /// How the check was adapted to the client's Nix (a `note` line).
    adapted: Option<String>,
}

fn per_path(paths: &[&str], f: impl Fn(&str) -> Vec<&str>) -> Vec<Vec<String>> {
    paths
        .iter()
        .map(|p| f(p).into_iter().map(str::to_string).collect())
        .collect()
}

/// One command line, owned.
fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

impl Check {
    /// A check with the common settings: stdout compared (as JSON when
    /// `json`), nothing else.
    fn new(name: &'static str, cmds: Vec<Vec<String>>, json: bool, must_succeed: bool) -> Check {
        Check {
            name,
            cmds,
            json,
            must_succeed,
            stderr: false,
            any: false,
            exact_error: false,
            nar_from: vec![],
            not_applicable: None,
            adapted: None,
        }
    }
}

/// What the checks are built from: the fixture and its sample of paths,
/// also split into outputs and derivations.
struct Paths<'a> {
    fx: &'a Fixture,
    sample: Vec<&'a str>,
    outputs: Vec<&'a str>,
    drvs: Vec<&'a str>,
}

impl<'a> Paths<'a> {
    fn new(fx: &'a Fixture) -> Paths<'a> {
        let sample = fx.sample();
        let outputs = sample.iter().copied().filter(|p| !p.ends_with(".drv")).collect();
        let drvs = sample.iter().copied().filter(|p| p.ends_with(".drv")).collect();
        Paths {
            fx,
            sample,
            outputs,
            drvs,
        }
    }

    /// `nix-store --query <query> P` for each sampled path.
    fn query_each(&self, query: &'static str) -> Vec<Vec<String>> {
        per_path(&self.sample, |p| {
            vec!["nix-store", "--store", "{S}", "--query", query, p]
        })
    }
}

/// The parity checks in the order they run (and [`NAMES`] lists them).
const CHECKS: &[fn(&Paths) -> Check] = &[
    path_info_json,
    path_info_json_all,
    requisites,
    referrers,
    referrers_closure,
    deriver,
    valid_derivers,
    outputs,
    queries,
    verify_path,
    check_validity,
    path_from_hash_part,
    invalid_path,
    dump,
    store_ls_cat,
    export,
    derivation_show,
    dry_run,
    realisation,
    realisation_input_addressed,
    ssh_ng_path_info_json,
];

/// The checks, fitted to the client's Nix; a check left without commands
/// is dropped.
fn checks(fs: &Rootfs, fx: &Fixture) -> Vec<Check> {
    let p = Paths::new(fx);
    let mut v: Vec<Check> = CHECKS.iter().map(|check| check(&p)).collect();
    v.retain(|c| !c.cmds.is_empty());
    for c in &mut v {
        adapt(fs, c);
    }
    v
}

fn path_info_json(p: &Paths) -> Check {
    let fx = p.fx;
    let c = cmd(&[
        "nix",
        "path-info",
        "--json",
        "--recursive",
        "--store",
        "{S}",
        &fx.final_out,
        &fx.src,
        &fx.final_drv,
    ]);
    Check::new("parity/path-info-json", vec![c], true, true)
}

fn path_info_json_all(_: &Paths) -> Check {
    let c = cmd(&["nix", "path-info", "--json", "--all", "--store", "{S}"]);
    Check::new("parity/path-info-json-all", vec![c], true, true)
}

fn requisites(p: &Paths) -> Check {
    Check::new("parity/requisites", p.query_each("--requisites"), false, true)
}

fn referrers(p: &Paths) -> Check {
    Check::new("parity/referrers", p.query_each("--referrers"), false, true)
}

fn referrers_closure(p: &Paths) -> Check {
    Check::new(
        "parity/referrers-closure",
        p.query_each("--referrers-closure"),
        false,
        true,
    )
}

fn deriver(p: &Paths) -> Check {
    Check::new("parity/deriver", p.query_each("--deriver"), false, true)
}

fn valid_derivers(p: &Paths) -> Check {
    let cmds = per_path(&p.outputs, |o| {
        vec!["nix-store", "--store", "{S}", "--query", "--valid-derivers", o]
    });
    Check::new("parity/valid-derivers", cmds, false, true)
}

fn outputs(p: &Paths) -> Check {
    let cmds = per_path(&p.drvs, |d| {
        vec!["nix-store", "--store", "{S}", "--query", "--outputs", d]
    });
    Check::new("parity/outputs", cmds, false, true)
}

fn queries(p: &Paths) -> Check {
    let cmds = p
        .sample
        .iter()
        .flat_map(|s| {
            ["--hash", "--size", "--references", "--tree", "--graph"]
                .iter()
                .map(|q| cmd(&["nix-store", "--store", "{S}", "--query", q, s]))
                .collect::<Vec<_>>()
        })
        .collect();
    Check::new("parity/queries", cmds, false, true)
}

fn verify_path(p: &Paths) -> Check {
    let cmds = per_path(&p.sample, |s| vec!["nix-store", "--store", "{S}", "--verify-path", s]);
    Check::new("parity/verify-path", cmds, false, true)
}

fn check_validity(p: &Paths) -> Check {
    let mut a = cmd(&["nix-store", "--store", "{S}", "--check-validity", "--print-invalid"]);
    a.extend(p.sample.iter().map(|s| s.to_string()));
    a.push(NOT_THERE.into());
    Check::new("parity/check-validity", vec![a], false, true)
}

fn path_from_hash_part(p: &Paths) -> Check {
    let cmds = per_path(&p.sample, |s| {
        let h = &s["/nix/store/".len().."/nix/store/".len() + 32];
        vec!["nix", "store", "path-from-hash-part", "--store", "{S}", h]
    });
    Check::new("parity/path-from-hash-part", cmds, false, true)
}

fn invalid_path(_: &Paths) -> Check {
    let cmds = vec![
        cmd(&["nix", "path-info", "--store", "{S}", NOT_THERE]),
        cmd(&["nix-store", "--store", "{S}", "--query", "--references", NOT_THERE]),
        cmd(&[
            "nix",
            "store",
            "path-from-hash-part",
            "--store",
            "{S}",
            "ffffffffffffffffffffffffffffffff",
        ]),
    ];
    Check {
        exact_error: true,
        ..Check::new("parity/invalid-path", cmds, false, false)
    }
}

fn dump(p: &Paths) -> Check {
    let cmds = per_path(&p.sample, |s| vec!["nix", "store", "dump-path", "--store", "{SSH}", s]);
    Check {
        nar_from: cmd(&p.sample),
        ..Check::new("parity/dump", cmds, false, true)
    }
}

fn store_ls_cat(p: &Paths) -> Check {
    let tree = &p.fx.tree;
    let cmds = vec![
        cmd(&[
            "nix",
            "store",
            "ls",
            "--store",
            "{SSH}",
            "--recursive",
            "--long",
            "--json",
            tree,
        ]),
        cmd(&[
            "nix",
            "store",
            "cat",
            "--store",
            "{SSH}",
            &format!("{tree}/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/bottom.txt"),
        ]),
    ];
    Check {
        nar_from: vec![tree.clone()],
        ..Check::new("parity/store-ls-cat", cmds, false, true)
    }
}

fn export(p: &Paths) -> Check {
    let mut a = cmd(&["nix-store", "--store", "{SSH}", "--export"]);
    a.extend(p.sample.iter().map(|s| s.to_string()));
    Check {
        nar_from: cmd(&p.sample),
        ..Check::new("parity/export", vec![a], false, true)
    }
}

fn derivation_show(p: &Paths) -> Check {
    let cmds = per_path(&p.drvs, |d| vec!["nix", "derivation", "show", "--store", "{S}", d]);
    Check::new("parity/derivation-show", cmds, true, true)
}

fn dry_run(p: &Paths) -> Check {
    let fx = p.fx;
    let c = cmd(&[
        "nix-store",
        "--store",
        "{S}",
        "--realise",
        "--dry-run",
        &fx.final_drv,
        &fx.split_drv,
    ]);
    Check {
        stderr: true,
        ..Check::new("parity/dry-run", vec![c], false, true)
    }
}

/// QueryRealisation (what Nix's local-overlay store asks its lower store)
/// and the floating output in QueryDerivationOutputMap: the
/// content-addressed derivation's output must be found, on both sides.
fn realisation(p: &Paths) -> Check {
    Check::new("parity/realisation", vec![realisation_info(&p.fx.ca_drv)], true, true)
}

/// Input-addressed (and one never built): whatever Nix's daemon answers,
/// ours must answer the same.
fn realisation_input_addressed(p: &Paths) -> Check {
    let fx = p.fx;
    let cmds = [&fx.final_drv, &fx.split_drv, &fx.unbuilt_drv]
        .iter()
        .map(|d| realisation_info(d))
        .collect();
    Check {
        any: true,
        ..Check::new("parity/realisation-input-addressed", cmds, true, false)
    }
}

fn ssh_ng_path_info_json(p: &Paths) -> Check {
    let fx = p.fx;
    let c = cmd(&[
        "nix",
        "path-info",
        "--json",
        "--recursive",
        "--store",
        "{SSH}",
        &fx.final_out,
        &fx.src,
    ]);
    Check::new("parity/ssh-ng-path-info-json", vec![c], true, true)
}

/// `nix path-info` / `nix store …` with `.drv` arguments, on a Nix that
/// reads them as their outputs: `--derivation` (the derivation itself, what
/// newer Nix reads) when every argument is a `.drv`; otherwise the `.drv`s go
/// to a second command with `--derivation` and the others stay as they are
/// (`--derivation` would turn an output into its deriver).
fn drv_args_as_themselves(c: &mut Check, why: &str) {
    let mut out = vec![];
    for cmd in std::mem::take(&mut c.cmds) {
        let is_drv = |a: &String| a.starts_with("/nix/store/") && a.ends_with(".drv");
        let store_args = cmd.iter().filter(|a| a.starts_with("/nix/store/")).count();
        let installables = matches!(cmd.get(1).map(String::as_str), Some("path-info" | "store"));
        if cmd[0] != "nix" || !installables || !cmd.iter().any(is_drv) {
            out.push(cmd);
            continue;
        }
        if cmd.iter().filter(|a| is_drv(a)).count() == store_args {
            // Only derivations: `--derivation` makes each mean itself.
            let mut cmd = cmd;
            cmd.push("--derivation".into());
            out.push(cmd);
            c.adapted = Some(format!("{why}: run with `--derivation`"));
            continue;
        }
        let others: Vec<String> = cmd.iter().filter(|a| !is_drv(a)).cloned().collect();
        let mut drvs: Vec<String> = cmd.iter().filter(|a| !a.starts_with("/nix/store/")).cloned().collect();
        drvs.insert(2, "--derivation".into());
        drvs.extend(cmd.iter().filter(|a| is_drv(a)).cloned());
        if others.iter().any(|a| a.starts_with("/nix/store/")) {
            out.push(others);
        }
        out.push(drvs);
        c.adapted = Some(format!(
            "{why}: the `.drv` arguments are asked about in a second `nix path-info --derivation`"
        ));
    }
    c.cmds = out;
}

/// Fits a check to the client's Nix version: a command it lacks is replaced
/// by its older name (noted), left out when the check keeps other commands
/// (noted), or the whole check is not applicable (with the reason).
fn adapt(fs: &Rootfs, c: &mut Check) {
    let is_hash_part = |cmd: &Vec<String>| cmd.get(1..3) == Some(&["store".to_string(), "path-from-hash-part".into()]);
    if let Some(why) = fs.lacks(Feature::PathFromHashPart) {
        if c.cmds.iter().all(is_hash_part) {
            c.not_applicable = Some(why);
        } else if c.cmds.iter().any(is_hash_part) {
            c.cmds.retain(|cmd| !is_hash_part(cmd));
            c.adapted = Some(format!("{why}: that command is left out, the others run"));
        }
    }
    if let Some(why) = fs.lacks(Feature::ValidDerivers) {
        if c.cmds.iter().any(|cmd| cmd.iter().any(|a| a == "--valid-derivers")) {
            c.not_applicable = Some(why);
        }
    }
    if let Some(why) = fs.lacks(Feature::OutputsSyntax) {
        // A bare `.drv` means all its outputs there (see DrvArgIsItself).
        let mut changed = false;
        for a in c.cmds.iter_mut().flatten().filter(|a| a.ends_with(".drv^*")) {
            a.truncate(a.len() - 2);
            changed = true;
        }
        if changed {
            c.adapted = Some(format!(
                "{why}: `DRV^*` is given as `DRV`, which means its outputs there"
            ));
        }
    }
    if let Some(why) = fs.lacks(Feature::DrvArgIsItself) {
        drv_args_as_themselves(c, &why);
    }
    if let Some(why) = fs.lacks(Feature::DerivationShow) {
        let old = fs.derivation_show();
        for cmd in c
            .cmds
            .iter_mut()
            .filter(|cmd| cmd.get(1..3) == Some(&["derivation".into(), "show".into()]))
        {
            cmd.splice(0..3, old.iter().map(|a| a.to_string()));
            c.adapted = Some(format!("{why}: run as `{}`", old.join(" ")));
        }
    }
}

/// `nix realisation info --json <drv>^*`.
fn realisation_info(drv: &str) -> Vec<String> {
    [
        "nix",
        "realisation",
        "info",
        "--extra-experimental-features",
        "ca-derivations",
        "--json",
        "--store",
        "{S}",
        &format!("{drv}^*"),
    ]
    .map(String::from)
    .to_vec()
}

struct Side {
    unix: String,
    ssh: String,
}

fn run_check(fs: &Rootfs, check: &Check, side: &Side) -> Result<Vec<Output>> {
    let mut outs = Vec::new();
    for cmd in &check.cmds {
        let args: Vec<String> = cmd
            .iter()
            .map(|a| a.replace("{SSH}", &side.ssh).replace("{S}", &side.unix))
            .collect();
        let mut o = fs.run(&args)?;
        if check.json && o.success() {
            o.stdout = normalize_json(&o.stdout())?.into_bytes();
        }
        outs.push(o);
    }
    Ok(outs)
}

/// Runs a check against Nix's own daemon and validates the answers.
fn baseline(fs: &Rootfs, check: &Check, nix: &Side) -> Result<Vec<Output>> {
    let base = run_check(fs, check, nix)?;
    if check.must_succeed {
        for o in &base {
            if !o.success() {
                bail!("baseline broken: {}", o.failure_text("failed against Nix's own daemon"));
            }
        }
    } else if !check.any && base.iter().all(|o| o.success()) {
        bail!("baseline broken: Nix's own daemon accepted every invalid query");
    }
    Ok(base)
}

/// Runs a check against one of our flavours and compares it with the
/// baseline's answers. Returns notes on what was normalised (gRPC flavour).
fn compare(
    fs: &Rootfs,
    check: &Check,
    base: &[Output],
    kind: Kind,
    sides: [&Side; 2],
    daemon: &Daemon,
) -> Result<Vec<String>> {
    let ours = sides[1];
    let mut notes = Vec::new();
    let log_from = daemon.log_text().len();
    let got = run_check(fs, check, ours)?;
    for (b, g) in base.iter().zip(&got) {
        let what = g.desc.replace(&ours.unix, "<store>").replace(&ours.ssh, "<store>");
        let mut b = b.clone();
        let mut g = g.clone();
        if kind.grpc() && check.json && b.success() {
            let omitted = fs.lacks(Feature::JsonUltimateFalse).is_some();
            grpc_normalise(&what, &mut b, &mut g, omitted, &mut notes)?;
        }
        if let Err(e) = same(&what, &b, &g) {
            bail!("{e:#}; daemon log: {}", daemon.log_tail());
        }
        if check.stderr && b.stderr != g.stderr {
            bail!(
                "{what}: stderr differs: {}",
                super::first_difference(&b.stderr(), &g.stderr())
            );
        }
        if check.exact_error {
            same_error(&what, [&b, &g], sides)?;
        }
    }
    let log = daemon.log_text();
    let log = log.get(log_from..).unwrap_or_default();
    for p in &check.nar_from {
        if !answered(log, "NarFromPath", p) {
            bail!(
                "our daemon's log shows no answered NarFromPath for {p} during this check: the client did not \
                 read the NAR through the protocol; daemon log: {}",
                daemon.log_tail()
            );
        }
    }
    Ok(notes)
}

/// gRPC flavour, JSON answers only: snix's PathInfo has neither `ultimate`
/// nor a registration time, so through a PathInfoService every path reads
/// back as not ultimate and with no registration time. `ultimate` is set to
/// false on Nix's side only (ours must say false); `registrationTime` is
/// removed from Nix's side, and from ours only where it says "none" (absent,
/// null or 0): a real time on our side still differs.
fn grpc_normalise(
    what: &str,
    b: &mut Output,
    g: &mut Output,
    ultimate_omitted_when_false: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let (text, n) = super::grpc_ultimate_false(&b.stdout(), ultimate_omitted_when_false)?;
    if n > 0 {
        let how = match ultimate_omitted_when_false {
            true => "removed from Nix's answer (this Nix prints it only when true)",
            false => "set to false in Nix's answer",
        };
        notes.push(format!(
            "{what}: `ultimate` of {n} path(s) {how} (not in snix's schema)"
        ));
    }
    let (text, n) = super::grpc_without_registration_time(&text, false)?;
    if n > 0 {
        notes.push(format!(
            "{what}: `registrationTime` of {n} path(s) removed from Nix's answer (not in snix's schema)"
        ));
    }
    b.stdout = text.into_bytes();
    if g.success() {
        g.stdout = super::grpc_without_registration_time(&g.stdout(), true)?.0.into_bytes();
    }
    Ok(())
}

/// The same failure: exit code and stderr, each side's store URL replaced by
/// `<store>`. A dropped connection or a different error text fails.
fn same_error(what: &str, outs: [&Output; 2], sides: [&Side; 2]) -> Result<()> {
    let [b, g] = outs;
    if b.code != g.code {
        bail!(
            "{what}: exit code differs: nix-daemon {:?}, ours {:?}; ours stderr: {}",
            b.code,
            g.code,
            g.stderr()
        );
    }
    let norm = |o: &Output, s: &Side| o.stderr().replace(&s.unix, "<store>").replace(&s.ssh, "<store>");
    let (bs, gs) = (norm(b, sides[0]), norm(g, sides[1]));
    if bs != gs {
        bail!("{what}: stderr differs: {}", super::first_difference(&bs, &gs));
    }
    Ok(())
}

/// Whether `log` (our daemon's, `--log-level …server=debug`) has a
/// successful `request` line for `op` on `path`.
fn answered(log: &str, op: &str, path: &str) -> bool {
    log.lines().any(|l| {
        l.contains(" request ")
            && (l.contains(&format!("op=\"{op}\"")) || l.contains(&format!("op={op} ")))
            && (l.contains(&format!("store_path=\"{path}\"")) || l.contains(&format!("store_path={path} ")))
            && (l.contains("result=\"ok\"") || l.contains("result=ok"))
    })
}

/// Report name of a check for a flavour (None: Nix's daemon alone):
/// `parity/…` and `ours/…` for [`Kind::Ours`], `parity-<short>/…` and
/// `<short>/…` for the others.
pub fn flavoured(name: &str, kind: Option<Kind>) -> String {
    match kind {
        None => name.replacen("parity/", "baseline/", 1),
        Some(Kind::Ours) | Some(Kind::Nix) => name.to_string(),
        Some(k) => {
            if let Some(rest) = name.strip_prefix("parity/") {
                format!("parity-{}/{rest}", k.short())
            } else if let Some(rest) = name.strip_prefix("ours/") {
                format!("{}/{rest}", k.short())
            } else {
                name.to_string()
            }
        }
    }
}

/// The checks of our daemon alone, run in each of our flavours after the
/// parity checks.
const OURS_ONLY: [&str; 2] = ["ours/refuses-writes", "ours/query-missing-unbuilt"];

/// The names of the checks flavour `k` runs (None: Nix's daemon alone,
/// which runs no ours-only check).
fn names_of(checks: &[Check], k: Option<Kind>) -> impl Iterator<Item = &str> {
    checks
        .iter()
        .map(|c| c.name)
        .chain(OURS_ONLY.iter().copied().filter(move |_| k.is_some()))
}

/// Fails every check of flavour `k` with `why`.
fn fail_all(report: &mut Report, fs: &Rootfs, checks: &[Check], k: Option<Kind>, why: &str) {
    for n in names_of(checks, k) {
        report.fail(&tagged(&flavoured(n, k), &fs.label), why);
    }
}

/// How a client reaches daemon `d`: its unix URL and an ssh-ng relay.
fn side_of(ctx: &Ctx, fs: &Rootfs, d: &Daemon, who: &str) -> Result<Side> {
    Ok(Side {
        unix: d.url(),
        ssh: ssh_ng_url(ctx, fs, &format!("{}-{who}", fs.suite), &d.socket)?,
    })
}

pub fn run(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, with_ours: bool, report: &mut Report) {
    let checks = checks(fs, fx);
    let flavours = flavours_to_run(ctx, fs, &checks, with_ours, report);
    if flavours.is_empty() {
        return;
    }
    let nix = match daemons::start_nix(ctx, fs, &format!("/e2e/run/parity-{}-nix.sock", fs.suite), &fx.root) {
        Ok(d) => d,
        Err(e) => {
            for k in &flavours {
                fail_all(report, fs, &checks, *k, &format!("setup: {e:#}"));
            }
            return;
        }
    };
    let nix_side = match side_of(ctx, fs, &nix, "nix") {
        Ok(s) => s,
        Err(e) => {
            report.fail(&tagged("parity/setup", &fs.label), &format!("{e:#}"));
            return;
        }
    };
    let run = Run {
        ctx,
        fs,
        fx,
        checks: &checks,
        nix_side: &nix_side,
    };
    let mut cache = Cache {
        bases: checks.iter().map(|_| None).collect(),
        state: format!("/e2e/parity-{}-state", fs.suite),
        imported: None,
        bare_nix: None,
    };
    for kind in flavours {
        match kind {
            None => run.baseline_only(&mut cache, report),
            Some(kind) => run.flavour(&mut cache, kind, report),
        }
    }
    drop(nix);
}

/// The flavours to start: each of ours (or Nix's daemon alone without
/// `with_ours`), less the image flavours this Nix cannot serve and erofs
/// where it cannot be mounted (both reported), and only those with at least
/// one wanted check.
fn flavours_to_run(
    ctx: &Ctx,
    fs: &Rootfs,
    checks: &[Check],
    with_ours: bool,
    report: &mut Report,
) -> Vec<Option<Kind>> {
    let mut candidates: Vec<Option<Kind>> = if with_ours {
        Kind::ours(ctx.snix.is_some()).into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    if let Some(why) = image_not_applicable(fs) {
        for k in candidates.iter().flatten().filter(|k| k.image()) {
            for n in names_of(checks, Some(*k)) {
                report.not_applicable(&tagged(&flavoured(n, Some(*k)), &fs.label), &why);
            }
        }
        candidates.retain(|k| !k.is_some_and(Kind::image));
    }
    if let Some(why) = crate::images::erofs_unavailable() {
        candidates.retain(|k| *k != Some(Kind::OursErofs));
        let name = tagged("parity-ours-erofs/setup", &fs.label);
        if with_ours && report.wanted("parity-ours-erofs/") {
            report.setup_problem(&name, &why, ctx.ci);
        }
    }
    candidates
        .into_iter()
        .filter(|k| names_of(checks, *k).any(|n| report.wanted(&tagged(&flavoured(n, *k), &fs.label))))
        .collect()
}

/// What every flavour of one parity run reads: the suite, the checks and
/// how to reach Nix's own daemon.
struct Run<'a> {
    ctx: &'a Ctx,
    fs: &'a Rootfs,
    fx: &'a Fixture,
    checks: &'a [Check],
    nix_side: &'a Side,
}

/// What a parity run computes once, when first needed, and shares between
/// the flavours: Nix's daemon's answers per check (the baseline), the index
/// both of our non-image flavours serve, and Nix's daemon over the fixture
/// with its realisations removed (the realisation baseline of flavours that
/// carry none).
struct Cache {
    bases: Vec<Option<std::result::Result<Vec<Output>, String>>>,
    state: String,
    imported: Option<std::result::Result<(), String>>,
    bare_nix: Option<std::result::Result<(Daemon, Side), String>>,
}

/// One of our flavours, started: which, its daemon and how to reach it.
struct Ours<'d> {
    kind: Kind,
    daemon: &'d Daemon,
    side: &'d Side,
}

impl Run<'_> {
    /// Check `i`'s baseline, computed on first use.
    fn base_of(&self, cache: &mut Cache, i: usize) -> Result<Vec<Output>> {
        let b = cache.bases[i]
            .get_or_insert_with(|| baseline(self.fs, &self.checks[i], self.nix_side).map_err(|e| format!("{e:#}")));
        b.clone().map_err(anyhow::Error::msg)
    }

    /// Without our daemon: each check against Nix's daemon alone.
    fn baseline_only(&self, cache: &mut Cache, report: &mut Report) {
        for (i, c) in self.checks.iter().enumerate() {
            let name = tagged(&flavoured(c.name, None), &self.fs.label);
            match &c.not_applicable {
                Some(why) => report.not_applicable(&name, why),
                None => {
                    report.run(&name, || self.base_of(cache, i).map(|_| ()));
                }
            }
        }
    }

    /// One of our flavours: started, every wanted check compared with the
    /// baseline, then the ours-only checks; stopped (and unmounted).
    fn flavour(&self, cache: &mut Cache, kind: Kind, report: &mut Report) {
        let (daemon, side, mounted) = match self.start(cache, kind) {
            Ok(x) => x,
            Err(e) => {
                fail_all(report, self.fs, self.checks, Some(kind), &format!("setup: {e:#}"));
                return;
            }
        };
        let ours = Ours {
            kind,
            daemon: &daemon,
            side: &side,
        };
        for i in 0..self.checks.len() {
            self.check(cache, report, i, &ours);
        }
        let (ctx, fs, fx) = (self.ctx, self.fs, self.fx);
        report.run(
            &tagged(&flavoured("ours/refuses-writes", Some(kind)), &fs.label),
            || refuses_writes(ctx, fs, fx, &daemon),
        );
        report.run(
            &tagged(&flavoured("ours/query-missing-unbuilt", Some(kind)), &fs.label),
            || query_missing_unbuilt(fs, fx, &self.nix_side.unix, &daemon.url()),
        );
        drop(daemon);
        drop(mounted);
    }

    /// Check `i` in one of our flavours (if wanted and applicable), with
    /// its notes.
    fn check(&self, cache: &mut Cache, report: &mut Report, i: usize, ours: &Ours) {
        let c = &self.checks[i];
        let kind = ours.kind;
        let name = tagged(&flavoured(c.name, Some(kind)), &self.fs.label);
        if !report.wanted(&name) {
            return;
        }
        if let Some(why) = &c.not_applicable {
            report.not_applicable(&name, why);
            return;
        }
        let mut notes: Vec<String> = c.adapted.iter().cloned().collect();
        report.run(&name, || {
            let base = self.base_of(cache, i)?;
            if kind != Kind::Ours && c.name.starts_with("parity/realisation") {
                let (ctx, fs, fx) = (self.ctx, self.fs, self.fx);
                let bare = cache
                    .bare_nix
                    .get_or_insert_with(|| nix_without_realisations(ctx, fs, fx).map_err(|e| format!("{e:#}")))
                    .as_ref()
                    .map_err(|e| anyhow::anyhow!("Nix's daemon without realisations: {e}"))?;
                notes.push(has_no_realisations(fs, c, kind, [&bare.1, ours.side])?);
                return Ok(());
            }
            notes.extend(compare(
                self.fs,
                c,
                &base,
                kind,
                [self.nix_side, ours.side],
                ours.daemon,
            )?);
            Ok(())
        });
        for n in notes {
            report.note(&name, &n);
        }
    }

    /// Starts our daemon of flavour `kind`: in front of a real snix-store,
    /// on an image (mounted for erofs), or on the index imported once.
    fn start(&self, cache: &mut Cache, kind: Kind) -> Result<(Daemon, Side, Option<Mounted>)> {
        let (ctx, fs, fx) = (self.ctx, self.fs, self.fx);
        let socket = format!("/e2e/run/parity-{}-{}.sock", fs.suite, kind.short());
        let mut mounted = None;
        let d = if kind == Kind::OursSnix {
            // A real snix-store of its own, filled by `snix-store copy`.
            let dir = format!("/e2e/run/parity-{}-snix", fs.suite);
            daemons::start_ours_snix(ctx, fs, &socket, &fx.root, &dir)?
        } else if kind.image() {
            let (d, m) = self.start_on_image(kind, &socket)?;
            mounted = m;
            d
        } else {
            let state = &cache.state;
            cache
                .imported
                .get_or_insert_with(|| import_parity_index(ctx, fs, fx, state).map_err(|e| format!("{e:#}")))
                .clone()
                .map_err(anyhow::Error::msg)?;
            match kind {
                Kind::OursGrpc => daemons::start_ours_grpc(ctx, fs, &socket, &fx.store_dir(), state)?,
                _ => daemons::start_ours(ctx, fs, &socket, &fx.store_dir(), state)?,
            }
        };
        let s = side_of(ctx, fs, &d, kind.short())?;
        Ok((d, s, mounted))
    }

    /// Our daemon on the fixture's image, with no state dir: the directory,
    /// or the erofs file mounted (the mount returned).
    fn start_on_image(&self, kind: Kind, socket: &str) -> Result<(Daemon, Option<Mounted>)> {
        let (ctx, fs, fx) = (self.ctx, self.fs, self.fx);
        let img = crate::images::base(ctx, fs, fx)?;
        let mut mounted = None;
        // The image root: the erofs file's mount point, or the directory.
        let root = match kind {
            Kind::OursErofs => {
                let mnt = format!("/e2e/run/parity-{}-erofs-mnt", fs.suite);
                mounted = Some(crate::images::mount(fs, kind, &img, &mnt)?);
                mnt
            }
            _ => img.dir.clone(),
        };
        let lower = crate::images::lower_dir(&root);
        let no_state = format!("/e2e/run/parity-{}-{}-no-state", fs.suite, kind.short());
        let d = daemons::start_ours_image(ctx, fs, kind, socket, &lower, &no_state)?;
        Ok((d, mounted))
    }
}

/// Why the image flavours cannot serve this Nix's lower store: their index
/// comes from `scripts/mk-lower-image`'s `nix path-info --json --recursive`
/// of every path of the lower store, run with this Nix.
fn image_not_applicable(fs: &Rootfs) -> Option<String> {
    let why = fs.lacks(Feature::DrvArgIsItself)?;
    Some(format!(
        "{why}; the image's index is made by scripts/mk-lower-image with `nix path-info --json --recursive` of \
         every path, .drv files included, which this Nix reads as the derivations' outputs and refuses for the \
         never-built one"
    ))
}

/// snix's PathInfoService holds no realisations, and neither does an image's
/// index (`nix path-info --json` and a registration carry none), so through
/// the gRPC and image flavours every realisation is unknown. The baseline is
/// Nix's own daemon over the same store with its realisations removed
/// (`sides[0]`, see [`nix_without_realisations`]): the client must end the
/// same way against both (exit code, stdout, stderr with each store URL
/// replaced), and must fail (no realisation can be answered). One documented
/// difference is allowed: where Nix's daemon lists a derivation under the
/// client's "will be built" heading (QueryMissing), ours, which builds
/// nothing, lists the same paths under "don't know how to build these
/// paths:" (see [`query_missing_unbuilt`]).
fn has_no_realisations(fs: &Rootfs, check: &Check, kind: Kind, sides: [&Side; 2]) -> Result<String> {
    let base = run_check(fs, check, sides[0])?;
    let ours = run_check(fs, check, sides[1])?;
    for (b, o) in base.iter().zip(&ours) {
        let what = o.desc.replace(&sides[1].unix, "<store>");
        if o.success() {
            bail!(
                "{what}: the {} flavour answered a realisation it cannot have: {}",
                kind.short(),
                o.stdout()
            );
        }
        let mut b = b.clone();
        b.stderr = as_unbuildable(&b.stderr()).into_bytes();
        same_error(&what, [&b, o], sides)?;
        if b.stdout != o.stdout {
            bail!(
                "{what}: stdout differs: {}",
                super::first_difference(&b.stdout(), &o.stdout())
            );
        }
    }
    let why = match kind {
        Kind::OursGrpc => "gRPC flavour: snix's PathInfoService has no realisations",
        Kind::OursSnix => "snix flavour: snix's PathInfoService has no realisations",
        _ => "image flavour: the image's index is built from `nix path-info --json`, which carries no realisations",
    };
    Ok(format!(
        "{why}; the client fails exactly as against Nix's daemon over the same store without its realisations"
    ))
}

/// `stderr` with each heading of the client's QueryMissing rendering for
/// derivations to build ("this derivation will be built:", "these 2
/// derivations will be built:") replaced by the one for unknown paths.
fn as_unbuildable(stderr: &str) -> String {
    let build_heading = |l: &str| {
        let l = strip_ansi(l);
        l == "this derivation will be built:"
            || l.strip_prefix("these ")
                .and_then(|r| r.strip_suffix(" derivations will be built:"))
                .is_some_and(|n| n.parse::<u64>().is_ok())
    };
    let lines: Vec<String> = stderr
        .split('\n')
        .map(|l| match build_heading(l) {
            true => "don't know how to build these paths:".to_string(),
            false => l.to_string(),
        })
        .collect();
    lines.join("\n")
}

/// Starts Nix's daemon over the fixture's store objects with a copy of its
/// database whose `Realisations` (and `RealisationsRefs`) rows are deleted;
/// the fixture itself is not touched (`real=` points at its store, `state=`
/// at the copy).
fn nix_without_realisations(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<(Daemon, Side)> {
    let root = format!("/e2e/run/parity-{}-no-realisations", fs.suite);
    let db = fs.host_path(&format!("{root}/nix/var/nix/db"));
    let _ = std::fs::remove_dir_all(fs.host_path(&root));
    std::fs::create_dir_all(&db)?;
    std::fs::create_dir_all(fs.host_path(&format!("{root}/nix/var/log/nix")))?;
    for e in std::fs::read_dir(fs.host_path(&format!("{}/nix/var/nix/db", fx.root)))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), db.join(e.file_name()))?;
        }
    }
    let c = rusqlite::Connection::open(db.join("db.sqlite"))?;
    let removed =
        c.execute("DELETE FROM RealisationsRefs", []).unwrap_or(0) + c.execute("DELETE FROM Realisations", [])?;
    drop(c);
    if removed == 0 {
        bail!("the fixture's database has no realisations to remove (was it built with ca-derivations?)");
    }
    let url = format!(
        "local?store=/nix/store&state={root}/nix/var/nix&log={root}/nix/var/log/nix&real={}/nix/store",
        fx.root
    );
    let socket = format!("/e2e/run/parity-{}-nix-no-realisations.sock", fs.suite);
    let d = daemons::start_nix_url(ctx, fs, &socket, &url, &format!("{}/nix/store", fx.root))?;
    let side = Side {
        unix: d.url(),
        ssh: "\u{0}no ssh-ng side".into(),
    };
    Ok((d, side))
}

/// Imports the fixture's Nix database into the index both our flavours serve.
fn import_parity_index(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, state: &str) -> Result<()> {
    daemons::ours_cli(
        ctx,
        fs,
        &[
            "import",
            "--state-dir",
            state,
            "--lower-dir",
            &fx.store_dir(),
            "--store-dir",
            "/nix/store",
            "--nix-db",
            &format!("{}/nix/var/nix/db/db.sqlite", fx.root),
        ],
    )?
    .ok()?;
    Ok(())
}

/// The refusal our daemon sends for an op that would write or build, written
/// out here on purpose (not taken from the daemon's code), so a changed text,
/// another error or a dropped connection fails the check.
const READ_ONLY: &str = "the lower store is read-only; it answers queries only, so add, build or delete in the \
                         upper (local-overlay) store instead";

/// Writes through our daemon fail with our refusal (exit code 1, the error
/// naming the op and its subject) and leave the lower store untouched.
fn refuses_writes(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, d: &Daemon) -> Result<()> {
    // The lower dir as the chroot sees it (an erofs image is mounted there).
    let lower = fs.host_path(&d.real);
    let before = tree_hash(&lower)?;
    ctx.write("/e2e/fixture/new-file", b"never stored\n")?;
    let url = d.url();
    let refused = |args: &[&str], op_subject: &str| -> Result<()> {
        let out = fs.run(args)?.failed()?;
        let want = format!("error: {op_subject}: {READ_ONLY}");
        let got = error_text(&out.stderr());
        if out.code != Some(1) || got != want {
            bail!(
                "`{}`: want exit code 1 and our refusal {want:?}; got exit code {:?} and {got:?}; daemon log: {}",
                out.desc,
                out.code,
                d.log_tail()
            );
        }
        Ok(())
    };
    refused(
        &["nix-store", "--store", &url, "--add", "/e2e/fixture/new-file"],
        "AddToStore ('new-file')",
    )?;
    refused(
        &["nix-store", "--store", &url, "--delete", &fx.final_out],
        "CollectGarbage",
    )?;
    refused(
        &["nix-store", "--store", &url, "--realise", &fx.final_drv, "--check"],
        &format!("BuildPaths ('{}!*')", fx.final_drv),
    )?;
    fs.run(&["nix-store", "--store", &url, "--verify-path", &fx.final_out])?
        .ok()?;
    let after = tree_hash(&lower)?;
    if before != after {
        bail!("the lower store directory changed during refused writes");
    }
    Ok(())
}

/// A Nix client's error: its stderr from the first line starting with
/// `error:` to the end, lines trimmed at the end, ANSI escapes removed.
fn error_text(stderr: &str) -> String {
    let plain = strip_ansi(stderr);
    let lines: Vec<&str> = plain.lines().map(str::trim_end).collect();
    match lines.iter().position(|l| l.starts_with("error:")) {
        Some(i) => lines[i..].join("\n").trim_end().to_string(),
        None => String::new(),
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (0x40..=0x7e)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// QueryMissing for a derivation whose output is not in the lower store: Nix's
/// daemon would build it, ours cannot build and (as documented) reports it as
/// unknown. Both answers come from the real Nix client's rendering, compared
/// whole: Nix's is exactly one section (the "will be built" heading and its
/// paths), ours exactly one section listing the same paths under the
/// client's "don't know how to build" heading, and nothing else.
fn query_missing_unbuilt(fs: &Rootfs, fx: &Fixture, nix_url: &str, ours_url: &str) -> Result<()> {
    let args = |u: &str| {
        vec![
            "nix-store".to_string(),
            "--store".into(),
            u.into(),
            "--realise".into(),
            "--dry-run".into(),
            fx.unbuilt_drv.clone(),
        ]
    };
    let nix = strip_ansi(&fs.run(&args(nix_url))?.ok()?.stderr());
    let ours = strip_ansi(&fs.run(&args(ours_url))?.ok()?.stderr());
    let nix_sections = sections(&nix)?;
    let [(heading, paths)] = nix_sections.as_slice() else {
        bail!(
            "baseline broken: Nix's daemon answered {} sections, want one: {nix}",
            nix_sections.len()
        );
    };
    if !heading.contains("will be built") || !paths.iter().any(|p| p.contains("e2e-unbuilt")) {
        bail!("baseline broken: Nix's daemon does not report e2e-unbuilt as to be built: {nix}");
    }
    let want_heading = "don't know how to build these paths:";
    let got = sections(&ours)?;
    if got != [(want_heading.to_string(), paths.clone())] {
        bail!("ours answered {got:?}; want exactly [({want_heading:?}, {paths:?})] (Nix's daemon: {nix:?})");
    }
    Ok(())
}

/// The client's rendering of QueryMissing: unindented heading lines, each
/// followed by its indented paths (sorted here). Any other line is an error.
fn sections(text: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        match (line.strip_prefix("  "), out.last_mut()) {
            (Some(p), Some((_, paths))) => paths.push(p.trim().to_string()),
            (Some(_), None) => bail!("an indented line before any heading: {text:?}"),
            (None, _) if line.ends_with(':') => out.push((line.to_string(), Vec::new())),
            (None, _) => bail!("a line that is neither a heading nor a path: {line:?} in {text:?}"),
        }
    }
    for (_, paths) in &mut out {
        paths.sort();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check table and OURS_ONLY run in the order NAMES lists them (the
    /// report and `--only` go by these names).
    #[test]
    fn table_runs_in_the_order_of_names() {
        let p = "/nix/store/00000000000000000000000000000000-x".to_string();
        let fx = Fixture {
            root: "/r".into(),
            made_by: "test".into(),
            leaf: p.clone(),
            mid: p.clone(),
            top: p.clone(),
            src: p.clone(),
            exe: p.clone(),
            tree: p.clone(),
            split_out: p.clone(),
            split_dev: p.clone(),
            final_out: p.clone(),
            final_drv: p.clone(),
            split_drv: p.clone(),
            tree_drv: p.clone(),
            unbuilt_drv: p.clone(),
            ca_drv: p.clone(),
            ca_out: p,
            all: vec![],
        };
        let paths = Paths::new(&fx);
        let names: Vec<&str> = CHECKS.iter().map(|c| c(&paths).name).chain(OURS_ONLY).collect();
        assert_eq!(names, NAMES);
    }
}
