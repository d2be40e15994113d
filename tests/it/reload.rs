//! Reloading the config file at run time (`POST /api/config/reload`, `SIGHUP`): providers and
//! routes swap atomically; a broken file changes nothing and every problem is reported.

use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::{Binary, client, get_json, served_by};
use crate::mock::Mock;

fn providers(mock: &Mock, route_target: &str) -> String {
    format!(
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"ka\"]\n\n[[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"kb\"]\n\n[[routes]]\nmodel = \"smart\"\ntargets = [{{ model = \"{route_target}\" }}]\n",
        mock.url()
    )
}

/// `POST /api/config/reload` on the running binary.
async fn reload(bin: &Binary) -> reqwest::Response {
    client()
        .post(format!("{}/api/config/reload", bin.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

/// Rewrites the providers and routes part of the running binary's config file.
fn rewrite(bin: &Binary, body: &str) {
    let path = bin.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("[[providers]]").next().unwrap().to_owned();
    let tail = text
        .rsplit_once("\n[cache]")
        .map(|(_, t)| format!("\n[cache]{t}"))
        .unwrap_or_default();
    std::fs::write(&path, format!("{head}{body}{tail}")).unwrap();
}

#[tokio::test]
async fn routes_and_providers_reload_atomically_and_a_broken_file_changes_nothing() {
    let mock = Mock::start().await;
    let bin = Binary::start(&providers(&mock, "a/gpt-4o-mini")).await;
    assert_eq!(served_by(&bin.url, "smart").await, (200, "a".into()));

    // Through the API: the route now goes to b.
    rewrite(&bin, &providers(&mock, "b/gpt-4o-mini"));
    let http = client();
    let r = reload(&bin).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reloaded"]["routes"], 1, "{v}");
    assert_eq!(v["reloaded"]["restart_needed"], json!([]), "{v}");
    assert_eq!(served_by(&bin.url, "smart").await, (200, "b".into()));
    // The reload is a version, with what changed in the file (its keys masked).
    let versions: Value = get_json(&format!("{}/api/config/versions", bin.url)).await;
    assert_eq!(versions["data"][0]["actor"], "reload", "{versions}");
    assert_eq!(
        versions["data"][0]["changes"][0]["path"], "routes.smart.targets",
        "{versions}"
    );
    assert_eq!(
        versions["data"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );

    // A broken file: 400 with every problem, and the running config is untouched.
    rewrite(
        &bin,
        &format!(
            "{}\n[[routes]]\nmodel = \"x\"\ntargets = [{{ model = \"ghost/m\" }}]\n[[providers]]\nname = \"c\"\nkind = \"telepathy\"\n",
            providers(&mock, "a/gpt-4o-mini")
        ),
    );
    let r = reload(&bin).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_config");
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(paths.contains(&"providers[2].kind"), "{v}");
    assert!(
        paths.iter().any(|p| p.starts_with("routes[1].targets[0]")),
        "{v}"
    );
    assert_eq!(served_by(&bin.url, "smart").await, (200, "b".into()));

    // SIGHUP does the same: a new provider and route appear.
    rewrite(
        &bin,
        &format!(
            "{}\n[[providers]]\nname = \"c\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"kc\"]\n",
            providers(&mock, "a/gpt-4o-mini"),
            mock.url()
        ),
    );
    bin.signal("HUP");
    let mut got = (0, String::new());
    for _ in 0..100 {
        got = served_by(&bin.url, "c/gpt-4o-mini").await;
        if got.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, (200, "c".into()));
    assert_eq!(served_by(&bin.url, "smart").await, (200, "a".into()));

    // A section that applies only at start is named, not silently ignored.
    let path = bin.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[responses]\nttl_seconds = 60\n")).unwrap();
    let v: Value = http
        .post(format!("{}/api/config/reload", bin.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["reloaded"]["restart_needed"], json!(["responses"]), "{v}");
}
