use super::*;

fn env(k: &str) -> Option<String> {
    match k {
        "GOOD_KEY" => Some("sk-good".into()),
        _ => None,
    }
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
        colour = "blue"
        [server]
        listen = "nowhere"
        admin_tokn = "x"

        [[providers]]
        name = "openai"
        kind = "openai"
        keys = [{ value = "env.MISSING_KEY", weight = -1 }]
        timeout = 5

        [[providers]]
        name = "b"
        kind = "vertex"

        [[providers]]
        name = "c"
        kind = "telepathy"
        keys = ["env.GOOD_KEY"]

        [[providers]]
        name = "d"
        kind = "openai-compatible"

        [[providers]]
        name = "e"
        kind = "openai"
        max_retries = "three"

        [[routes]]
        model = "smart"
        targets = [{ model = "openai/gpt-4o", weight = 0 }, { model = "ghost/x" }, { model = "nomodel" }]
        fallbacks = ["phantom/y"]
    "#;
    let issues = Config::parse(text, &env).unwrap_err();
    let rendered: Vec<String> = issues.iter().map(ToString::to_string).collect();
    let expect = [
        "colour: unknown field",
        "server.admin_tokn: unknown field",
        "server.listen: `nowhere` is not an address",
        "providers[0].keys[0].value: environment variable `MISSING_KEY` is not set",
        "providers[0].timeout: unknown field",
        "providers[0].keys[0].weight: weight must be a positive number",
        "providers[1].credentials: kind `vertex` needs a service-account key",
        "providers[2].kind: unknown kind `telepathy`",
        "providers[3].base_url: required for kind `openai-compatible`",
        "providers[4].max_retries: invalid type",
        "routes[0].targets[0].weight: weight must be a positive number",
        "routes[0].targets[1].model: unknown provider `ghost`",
        "routes[0].targets[2].model: `nomodel` must be `provider/model`",
        "routes[0].fallbacks[0]: unknown provider `phantom`",
    ];
    for e in expect {
        assert!(
            rendered.iter().any(|r| r.starts_with(e)),
            "missing `{e}` in:\n{}",
            rendered.join("\n")
        );
    }
}

#[test]
fn contract_example_is_valid() {
    let text = r#"
        [server]
        listen = "127.0.0.1:8080"
        data_dir = "./data"
        admin_token = "env.GOOD_KEY"
        request_timeout_ms = 120000
        max_body_bytes = 10485760

        [[providers]]
        name = "openai"
        kind = "openai"
        base_url = "https://api.openai.com/v1"
        keys = [ { value = "env.GOOD_KEY", weight = 0.7 }, { value = "env.GOOD_KEY", weight = 0.3 } ]
        timeout_ms = 60000
        max_retries = 2

        [[providers]]
        name = "anthropic"
        kind = "anthropic"
        keys = ["env.GOOD_KEY"]

        [[providers]]
        name = "groq"
        kind = "groq"
        keys = ["env.GOOD_KEY"]

        [[providers]]
        name = "az"
        kind = "azure"
        base_url = "https://res.openai.azure.com"
        api-version = "2024-10-21"
        keys = ["env.GOOD_KEY"]

        [[routes]]
        model = "smart"
        targets = [ { model = "openai/gpt-4o", weight = 0.8 }, { model = "anthropic/claude-sonnet-4-5", weight = 0.2 } ]
        fallbacks = ["groq/llama-3.3-70b-versatile"]

        [cache]
        enabled = true
        mode = "semantic"
        threshold = 0.92
        ttl_seconds = 3600
        store = "embedded"
        qdrant_url = "http://127.0.0.1:6334"
        embedding_model = "models/all-MiniLM-L6-v2"

        [mcp]
        max_iterations = 8
        tool_timeout_ms = 30000

        [[mcp.servers]]
        name = "calc"
        transport = "stdio"
        command = "mcp-calculator"
        args = []
        env = {}
    "#;
    let cfg = Config::parse(text, &env).unwrap();
    assert_eq!(cfg.providers.len(), 4);
    assert_eq!(cfg.providers[0].keys[0].source, "env.GOOD_KEY");
    assert_eq!(cfg.providers[0].keys[0].secret.expose(), "sk-good");
    assert_eq!(cfg.providers[1].base_url, "https://api.anthropic.com");
    assert_eq!(cfg.providers[3].api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(cfg.routes[0].targets[1].provider, "anthropic");
    assert_eq!(cfg.routes[0].targets[1].model, "claude-sonnet-4-5");
    assert_eq!(cfg.routes[0].fallbacks[0].model, "llama-3.3-70b-versatile");
    assert_eq!(cfg.mcp.max_iterations, 8);
    assert_eq!(cfg.mcp.servers.len(), 1);
    assert_eq!(cfg.mcp.servers[0].name, "calc");
    assert_eq!(
        cfg.mcp.servers[0].transport,
        crate::config::McpTransport::Stdio {
            command: "mcp-calculator".into(),
            args: vec![],
            env: vec![]
        }
    );
    assert!(cfg.cache.enabled);
    assert_eq!(cfg.cache.mode, crate::config::CacheMode::Semantic);
    assert!((cfg.cache.threshold - 0.92).abs() < 1e-6);
    assert_eq!(cfg.cache.ttl.as_secs(), 3600);
    assert_eq!(cfg.cache.store, crate::config::CacheStore::Embedded);
    assert!(cfg.server.admin_token.is_some());
}

#[test]
fn secrets_do_not_debug_print() {
    let cfg = Config::parse(
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nkeys = [\"env.GOOD_KEY\"]\n",
        &env,
    )
    .unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("sk-good"), "{dbg}");
}

#[test]
fn not_toml_is_one_clear_issue() {
    let issues = Config::parse("[[providers]\nname=", &env).unwrap_err();
    assert_eq!(issues.len(), 1);
    assert!(issues[0].message.contains("not valid TOML"));
}

#[test]
fn zero_config_reads_keys_and_ollama() {
    let cfg = Config::zero_config(&|k| match k {
        "GROQ_API_KEY" => Some("gk".into()),
        "OLLAMA_BASE_URL" => Some("http://127.0.0.1:11434".into()),
        "OPENAI_API_KEY" => Some("  ".into()),
        _ => None,
    });
    let names: Vec<&str> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["groq", "ollama"]);
    assert_eq!(cfg.providers[0].base_url, "https://api.groq.com/openai/v1");
    assert_eq!(cfg.providers[1].base_url, "http://127.0.0.1:11434/v1");
    assert!(cfg.providers[1].keys.is_empty());
}

#[test]
fn zero_config_finds_bedrock_in_the_aws_variables() {
    let cfg = Config::zero_config(&|k| match k {
        "AWS_REGION" => Some("eu-west-3".into()),
        "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
        _ => None,
    });
    let p = &cfg.providers[0];
    assert_eq!(
        (p.name.as_str(), p.kind),
        ("bedrock", ProviderKind::Bedrock)
    );
    assert_eq!(
        p.base_url,
        "https://bedrock-runtime.eu-west-3.amazonaws.com"
    );
    assert!(p.aws.as_ref().unwrap().credentials.is_some());
    // Credentials without a region are not enough to know the endpoint.
    let none = Config::zero_config(&|k| {
        (k == "AWS_ACCESS_KEY_ID" || k == "AWS_SECRET_ACCESS_KEY").then(|| "x".into())
    });
    assert!(none.providers.is_empty());
}

#[test]
fn the_documented_example_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/switchyard.example.toml"
    ))
    .unwrap();
    let cfg = Config::parse(&text, &|k| Some(format!("value-of-{k}"))).unwrap();
    assert_eq!(cfg.providers.len(), 5);
    assert_eq!(cfg.routes.len(), 2);
    // And every env.NAME in it is reported when unset.
    let issues = Config::parse(&text, &|_| None).unwrap_err();
    assert_eq!(issues.len(), 6, "{issues:?}");
}

#[test]
fn cache_section_is_validated() {
    let text = r#"
        [cache]
        mode = "fuzzy"
        threshold = 1.5
        ttl_seconds = 0
        store = "qdrant"
        max_entries = 0
        colour = "blue"
    "#;
    let issues = Config::parse(text, &env).unwrap_err();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for p in [
        "cache.mode",
        "cache.threshold",
        "cache.ttl_seconds",
        "cache.qdrant_url",
        "cache.max_entries",
        "cache.colour",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    let cfg = Config::parse(
        "[cache]\nstore = \"qdrant\"\nqdrant_url = \"http://q:6334\"\n",
        &env,
    )
    .unwrap();
    match cfg.cache.store {
        crate::config::CacheStore::Qdrant {
            url, collection, ..
        } => {
            assert_eq!(url, "http://q:6334");
            assert_eq!(collection, "switchyard_cache");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn route_cache_policies_are_validated_and_applied() {
    let text = r#"
        [[providers]]
        name = "p"
        kind = "openai"
        keys = ["k"]

        [[routes]]
        model = "a"
        targets = [{ model = "p/m" }]
        cache = { mode = "fuzzy", threshold = 1.5, ttl_seconds = 0 }

        [[routes]]
        model = "b"
        targets = [{ model = "p/m" }]
        cache = { colour = "blue" }
    "#;
    let issues = Config::parse(text, &env).unwrap_err();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for p in [
        "routes[0].cache.mode",
        "routes[0].cache.threshold",
        "routes[0].cache.ttl_seconds",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert!(
        issues.iter().any(|i| i.path.starts_with("routes[1]")),
        "an unknown field in a route's cache table is reported: {issues:?}"
    );

    let cfg = Config::parse(
        r#"
        [cache]
        mode = "exact"
        threshold = 0.9

        [[providers]]
        name = "p"
        kind = "openai"
        keys = ["k"]

        [[routes]]
        model = "sem"
        targets = [{ model = "p/m" }]
        cache = { mode = "shadow", ttl_seconds = 60 }
        "#,
        &env,
    )
    .unwrap();
    use crate::config::CacheMode;
    let sem = cfg.cache.policy("sem");
    assert_eq!(sem.mode, CacheMode::Shadow);
    assert_eq!(sem.threshold, 0.9, "unset fields follow [cache]");
    assert_eq!(sem.ttl.as_secs(), 60);
    assert_eq!(cfg.cache.policy("p/m").mode, CacheMode::Exact);
    assert!(cfg.cache.needs_embedder(), "a shadow route needs the model");
    let off = Config::parse("[cache]\nmode = \"off\"\n", &env).unwrap();
    assert!(!off.cache.enabled);
}

#[test]
fn responses_limits_are_validated_with_their_paths() {
    let ok = Config::parse("[responses]\nttl_seconds = 60\nmax_stored = 5\n", &env).unwrap();
    assert_eq!(ok.responses.ttl, std::time::Duration::from_secs(60));
    assert_eq!(ok.responses.max_stored, 5);
    let dflt = Config::parse("", &env).unwrap();
    assert_eq!(
        dflt.responses.ttl,
        std::time::Duration::from_secs(30 * 86_400)
    );
    let issues = Config::parse(
        "[responses]\nttl_seconds = 0\nmax_stored = 0\nkeep = true\n",
        &env,
    )
    .unwrap_err();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for p in [
        "responses.ttl_seconds",
        "responses.max_stored",
        "responses.keep",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}

#[test]
fn bedrock_needs_a_region_and_whole_credentials() {
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
        _ => None,
    };
    let ok = Config::parse(
        "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\nregion = \"eu-west-1\"\naws_access_key_id = \"env.AWS_ACCESS_KEY_ID\"\naws_secret_access_key = \"env.AWS_SECRET_ACCESS_KEY\"\naws_session_token = \"env.AWS_SESSION_TOKEN\"\n",
        &env,
    )
    .unwrap();
    let p = &ok.providers[0];
    assert_eq!(
        p.base_url,
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    );
    let aws = p.aws.as_ref().unwrap();
    assert!(aws.credentials.is_some());
    // An unset optional session token is absent, not an error.
    assert!(aws.session_token.is_none());
    let issues = Config::parse(
        "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\naws_access_key_id = \"x\"\n\n[[providers]]\nname = \"c\"\nkind = \"bedrock\"\nregion = \"us-east-1\"\n\n[[providers]]\nname = \"o\"\nkind = \"openai\"\nkeys = [\"k\"]\nregion = \"us-east-1\"\n",
        &env,
    )
    .unwrap_err();
    let rendered: Vec<String> = issues.iter().map(ToString::to_string).collect();
    for e in [
        "providers[0].region: kind `bedrock` needs a region",
        "providers[1].aws_access_key_id: kind `bedrock` needs aws_access_key_id and aws_secret_access_key",
        "providers[2].region: only used by kind `bedrock`",
    ] {
        assert!(
            rendered.iter().any(|r| r.starts_with(e)),
            "missing `{e}` in:\n{}",
            rendered.join("\n")
        );
    }
}

#[test]
fn the_shared_state_needs_its_url_and_only_with_postgres() {
    let problems = |text: &str| -> Vec<String> {
        Config::parse(text, &env)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let p = problems("[server]\nstate = \"postgres\"\n");
    assert!(
        p.iter().any(|i| i.starts_with("server.postgres_url")),
        "{p:?}"
    );
    let p = problems("[server]\npostgres_url = \"postgres://x@h/db\"\n");
    assert!(
        p.iter().any(|i| i.contains("only used with state")),
        "{p:?}"
    );
    let p = problems("[server]\nstate = \"mysql\"\n");
    assert!(p.iter().any(|i| i.starts_with("server.state")), "{p:?}");
    let p = problems("[server]\nstate = \"postgres\"\npostgres_url = \"mysql://h\"\n");
    assert!(
        p.iter().any(|i| i.starts_with("server.postgres_url")),
        "{p:?}"
    );
    let cfg = Config::parse(
        "[server]\nstate = \"postgres\"\npostgres_url = \"postgres://u@h/db\"\n",
        &env,
    )
    .unwrap();
    assert!(matches!(cfg.server.state, StateConfig::Postgres(_)));
    assert!(
        !format!("{:?}", cfg.server).contains("u@h"),
        "the URL is a secret"
    );
}
