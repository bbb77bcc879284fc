//! `deploy/traefik/`: forward-auth to the compose agent.

use crate::compose::{compose, compose_invocations};
use crate::files::{str_of, strings, yaml};
use crate::flags::{flag_value, port_of, Program};

#[test]
fn traefik_forward_auth_points_at_the_compose_agent() {
    let config = yaml("traefik/dynamic.yaml");
    let middlewares = config["http"]["middlewares"]
        .as_object()
        .expect("http.middlewares");
    let forward = middlewares
        .values()
        .find_map(|middleware| middleware.get("forwardAuth"))
        .expect("a forwardAuth middleware");
    let address = str_of(&forward["address"], "forwardAuth address");
    assert_eq!(address, "http://revocd-agent:8081");
    assert_eq!(
        strings(&forward["authResponseHeaders"], "authResponseHeaders"),
        ["X-Auth-Subject", "X-Auth-Jti", "X-Auth-Issuer"]
    );

    // The same name and port as the compose agent.
    let compose = compose();
    let agent = compose_invocations(&compose)
        .into_iter()
        .find(|invocation| invocation.program == Program::Agent)
        .expect("the compose agent");
    let name = agent.origin.rsplit(' ').next().expect("service name");
    let port = port_of(flag_value(&agent.args, "--http-listen").expect("--http-listen"));
    assert_eq!(address, format!("http://{name}:{port}"));

    // Chains name defined middlewares; routers name defined middlewares
    // and services.
    for (name, middleware) in middlewares {
        if let Some(chain) = middleware.get("chain") {
            for link in strings(&chain["middlewares"], name) {
                assert!(middlewares.contains_key(&link), "chain {name}: no {link}");
            }
        }
    }
    for (name, router) in config["http"]["routers"].as_object().expect("routers") {
        for middleware in strings(&router["middlewares"], name) {
            assert!(
                middlewares.contains_key(&middleware),
                "router {name}: no {middleware}"
            );
        }
        let service = str_of(&router["service"], name);
        assert!(
            config["http"]["services"].get(service).is_some(),
            "router {name}: no {service}"
        );
    }
}
