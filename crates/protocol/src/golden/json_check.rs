//! The value table checked against Nix's own JSON of the same values (the
//! `.json` next to each `.bin`), so that a slip in `values.rs` cannot make
//! an encoder look right. Nothing here touches the wire codec.

use serde_json::Value;

use super::data::{golden_dir, read};
use super::values::*;
use snix_lower_store_types::NarHash;

fn json(dir: &std::path::Path, stem: &str) -> Value {
    let b = read(dir, "worker-protocol", &format!("{stem}.json"))
        .unwrap_or_else(|| panic!("{stem}.json missing from the golden data"));
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{stem}.json is not JSON: {e}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s.as_str().expect("a JSON string"))
        .collect()
}

fn opt_base(v: &Value) -> Option<&str> {
    v.as_str()
}

#[test]
fn values_match_nix_json_for_paths_and_strings() {
    let Some(dir) = golden_dir("values_match_nix_json_for_paths_and_strings") else {
        return;
    };
    assert_eq!(strs(&json(&dir, "string")), STRINGS);
    let sp: Vec<String> = store_paths().iter().map(|p| p.base_name().to_owned()).collect();
    assert_eq!(strs(&json(&dir, "store-path")), sp);
    let osp = json(&dir, "optional-store-path");
    let got: Vec<Option<&str>> = osp.as_array().unwrap().iter().map(opt_base).collect();
    let want: Vec<Option<String>> = optional_store_paths()
        .iter()
        .map(|p| p.as_ref().map(|p| p.base_name().to_owned()))
        .collect();
    assert_eq!(got, want.iter().map(Option::as_deref).collect::<Vec<_>>());
    for (stem, (flat, nested)) in [("vector", vector_values()), ("set", set_values())] {
        let j = json(&dir, stem);
        let a = j.as_array().unwrap();
        for (i, want) in flat.iter().enumerate() {
            assert_eq!(&strs(&a[i]), want, "{stem}[{i}]");
        }
        let got: Vec<Vec<&str>> = a[3].as_array().unwrap().iter().map(strs).collect();
        assert_eq!(got, nested, "{stem}[3]");
    }
    assert_eq!(strs(&json(&dir, "drv-output")), {
        let ids: Vec<String> = drv_outputs()
            .iter()
            .map(|(h, n)| drv_output_id(h, n).to_string())
            .collect();
        ids
    });
}

/// Nix's JSON of a content address: `{"hash": SRI, "method": …}`, rendered
/// as the wire's `method:algo:nix32` text.
fn ca_text(v: &Value) -> String {
    let sri = v["hash"].as_str().expect("hash");
    let (algo, b64) = sri.split_once('-').expect("SRI");
    use base64::Engine as _;
    let digest = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    let prefix = match v["method"].as_str().expect("method") {
        "text" => "text:",
        "flat" => "fixed:",
        "nar" => "fixed:r:",
        m => panic!("unexpected method {m}"),
    };
    format!("{prefix}{algo}:{}", snix_lower_store_types::hash::nix32_encode(&digest))
}

#[test]
fn values_match_nix_json_for_content_addresses_and_flags() {
    let Some(dir) = golden_dir("values_match_nix_json_for_content_addresses_and_flags") else {
        return;
    };
    let ca = json(&dir, "content-address");
    let got: Vec<String> = ca.as_array().unwrap().iter().map(ca_text).collect();
    assert_eq!(got, content_addresses());
    let oca = json(&dir, "optional-content-address");
    let got: Vec<Option<String>> = oca
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (!v.is_null()).then(|| ca_text(v)))
        .collect();
    assert_eq!(got, optional_content_addresses());
    let modes: Vec<u64> = json(&dir, "build-mode")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(modes, BUILD_MODES);
    let flags: Vec<Option<bool>> = json(&dir, "optional-trusted-flag")
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_bool)
        .collect();
    assert_eq!(flags, TRUSTED_FLAGS);
}

fn derived_from_json(v: &Value) -> Derived {
    let sp = |s: &str| snix_lower_store_types::StorePath::from_base_name(s).unwrap();
    match v {
        Value::String(s) => Derived::Opaque(sp(s)),
        _ => {
            let outs = strs(&v["outputs"]);
            let outs = if outs == ["*"] { vec![] } else { outs };
            let outs = outs.into_iter().map(str::to_owned).collect();
            Derived::Built(sp(v["drvPath"].as_str().unwrap()), outs)
        }
    }
}

#[test]
fn values_match_nix_json_for_derived_paths() {
    let Some(dir) = golden_dir("values_match_nix_json_for_derived_paths") else {
        return;
    };
    for (stem, want) in [
        ("derived-path-1.29", derived_paths_1_29()),
        ("derived-path-1.30", derived_paths_1_30()),
    ] {
        let got: Vec<Derived> = json(&dir, stem)
            .as_array()
            .unwrap()
            .iter()
            .map(derived_from_json)
            .collect();
        assert_eq!(got, want, "{stem}");
    }
}

fn info_from_json(v: &Value) -> Info {
    let sp = |s: &str| snix_lower_store_types::StorePath::from_base_name(s).unwrap();
    let sig = |s: &Value| format!("{}:{}", s["keyName"].as_str().unwrap(), s["sig"].as_str().unwrap());
    assert_eq!(v["storeDir"], STORE_DIR);
    Info {
        path: v.get("path").map(|p| sp(p.as_str().unwrap())),
        deriver: v["deriver"].as_str().map(sp),
        nar_hash: NarHash::parse(v["narHash"].as_str().unwrap()).unwrap(),
        references: strs(&v["references"]).into_iter().map(sp).collect(),
        registration_time: v["registrationTime"].as_u64().unwrap(),
        nar_size: v["narSize"].as_u64().unwrap(),
        ultimate: v["ultimate"].as_bool().unwrap(),
        sigs: v["signatures"].as_array().unwrap().iter().map(sig).collect(),
        ca: (!v["ca"].is_null()).then(|| ca_text(&v["ca"])),
    }
}

#[test]
fn values_match_nix_json_for_path_infos() {
    let Some(dir) = golden_dir("values_match_nix_json_for_path_infos") else {
        return;
    };
    for (stem, want) in [
        ("unkeyed-valid-path-info-1.15", unkeyed_infos_1_15()),
        ("valid-path-info-1.15", infos_1_15()),
        ("valid-path-info-1.16", infos_1_16()),
    ] {
        let got: Vec<Info> = json(&dir, stem)
            .as_array()
            .unwrap()
            .iter()
            .map(info_from_json)
            .collect();
        assert_eq!(got, want, "{stem}");
    }
}

fn real_from_json(v: &Value) -> Real {
    let sp = |s: &str| snix_lower_store_types::StorePath::from_base_name(s).unwrap();
    let id = |s: &str| snix_lower_store_types::realisation::DrvOutputId::parse(s).unwrap();
    let sig = |s: &Value| match s {
        Value::String(s) => s.clone(),
        o => format!("{}:{}", o["keyName"].as_str().unwrap(), o["sig"].as_str().unwrap()),
    };
    Real {
        id: id(v["id"].as_str().unwrap()),
        out_path: sp(v["outPath"].as_str().unwrap()),
        signatures: v["signatures"].as_array().unwrap().iter().map(sig).collect(),
        dependent: v["dependentRealisations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, p)| (id(k), sp(p.as_str().unwrap())))
            .collect(),
    }
}

#[test]
fn values_match_nix_json_for_realisations() {
    let Some(dir) = golden_dir("values_match_nix_json_for_realisations") else {
        return;
    };
    let with_deps = json(&dir, "realisation-with-deps");
    assert_eq!(real_from_json(&with_deps[0]), realisation_with_deps_value());
    let plain = json(&dir, "realisation");
    assert_eq!(real_from_json(&plain[0]), realisation_plain());
    // The test source's hash (SRI) is the one in the files (base16).
    assert_eq!(
        NarHash::parse(NAR_HASH_SRI).unwrap().to_base16(),
        "15e3c560894cbb27085cf65b5a2ecb18488c999497f4531b6907a7581ce6d527"
    );
}
