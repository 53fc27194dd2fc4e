use std::future::ready;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use super::*;

fn names() -> Vec<String> {
    ["a", "b", "c", "basic-1"].iter().map(|s| s.to_string()).collect()
}

fn c(index: usize) -> Box<Expr> {
    Box::new(Expr::Config(index))
}

/// Runs a future whose parts are all ready (the tests' checks are).
fn block_on<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the test's checks are always ready"),
    }
}

#[test]
fn parses_with_not_over_and_over_or() {
    let cases = [
        ("a", Expr::Config(0)),
        ("a || b && c", Expr::Or(c(0), Box::new(Expr::And(c(1), c(2))))),
        ("(a || b) && c", Expr::And(Box::new(Expr::Or(c(0), c(1))), c(2))),
        ("!a && b", Expr::And(Box::new(Expr::Not(c(0))), c(1))),
        ("!(a||b)", Expr::Not(Box::new(Expr::Or(c(0), c(1))))),
        ("a && b && c", Expr::And(Box::new(Expr::And(c(0), c(1))), c(2))),
        (
            "basic-1 || !!a",
            Expr::Or(c(3), Box::new(Expr::Not(Box::new(Expr::Not(c(0)))))),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(Expr::parse(text, &names()), Ok(expected), "{text}");
    }
}

#[test]
fn parse_errors_say_what_and_where() {
    let cases = [
        ("a || d", 6, "no config is named \"d\""),
        ("a &&", 5, "found the end"),
        ("(a || b", 1, "never closed"),
        ("a b", 3, "unexpected name \"b\""),
        ("a & b", 3, "unexpected character '&'"),
        ("", 1, "found the end"),
        ("a )", 3, "unexpected `)`"),
    ];
    for (text, position, message) in cases {
        let error = Expr::parse(text, &names()).unwrap_err();
        assert_eq!(error.position + 1, position, "{text}: {error}");
        assert!(error.message.contains(message), "{text}: {error}");
    }
}

fn allow(header: &str) -> Outcome {
    Outcome::Allow {
        upstream_headers: vec![(header.to_string(), "1".to_string())],
    }
}

/// Evaluates `text` where config i returns `outcomes[i]`; returns the outcome and the order of checks.
fn run(text: &str, outcomes: &[Outcome]) -> (Outcome, Vec<usize>) {
    let expr = Expr::parse(text, &names()).unwrap();
    let calls = Mutex::new(Vec::new());
    let outcome = block_on(expr.evaluate(outcomes.len(), |index| {
        calls.lock().unwrap().push(index);
        ready(outcomes[index].clone())
    }));
    (outcome, calls.into_inner().unwrap())
}

#[test]
fn short_circuits_left_to_right_and_runs_each_config_once() {
    let basic_401 = Outcome::Deny {
        status: 401,
        headers: vec![("www-authenticate".into(), "Basic realm=\"r\"".into())],
        body: String::new(),
    };
    let outcomes = [allow("x-a"), basic_401.clone(), allow("x-c"), Outcome::deny(403)];
    let cases = [
        (
            "a || b",
            Outcome::Allow {
                upstream_headers: vec![("x-a".into(), "1".into())],
            },
            vec![0],
        ),
        (
            "b || a",
            Outcome::Allow {
                upstream_headers: vec![("x-a".into(), "1".into())],
            },
            vec![1, 0],
        ),
        (
            "a && c",
            Outcome::Allow {
                upstream_headers: vec![("x-a".into(), "1".into()), ("x-c".into(), "1".into())],
            },
            vec![0, 2],
        ),
        ("b && a", basic_401.clone(), vec![1]),
        ("basic-1 || b", basic_401.clone(), vec![3, 1]),
        ("b || basic-1", Outcome::deny(403), vec![1, 3]),
        ("!a", Outcome::deny(403), vec![0]),
        (
            "!b && a",
            Outcome::Allow {
                upstream_headers: vec![("x-a".into(), "1".into())],
            },
            vec![1, 0],
        ),
        (
            "(a && b) || (a && c)",
            Outcome::Allow {
                upstream_headers: vec![("x-a".into(), "1".into()), ("x-c".into(), "1".into())],
            },
            vec![0, 1, 2],
        ),
    ];
    for (text, expected, calls) in cases {
        assert_eq!(run(text, &outcomes), (expected, calls), "{text}");
    }
}

#[test]
fn the_default_requires_every_config_in_order() {
    let expr = Expr::all(3).unwrap();
    assert_eq!(expr, Expr::And(Box::new(Expr::And(c(0), c(1))), c(2)));
    assert_eq!(Expr::all(0), None);
}

#[test]
fn a_config_that_could_not_decide_is_never_a_yes() {
    let down = Outcome::deny(503);
    let outcomes = [allow("x-a"), down.clone(), allow("x-c"), Outcome::deny(403)];
    let cases = [
        // `!` over an outage is not an allow, nor is `&&` with one.
        ("!b", down.clone()),
        ("a && !b", down.clone()),
        ("!b || basic-1", down.clone()),
        // Another config may still authorize on its own.
        (
            "b || c",
            Outcome::Allow {
                upstream_headers: vec![("x-c".into(), "1".into())],
            },
        ),
        // A definite no still flips.
        (
            "!basic-1 && a",
            Outcome::Allow {
                upstream_headers: vec![("x-a".into(), "1".into())],
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(run(text, &outcomes).0, expected, "{text}");
    }
}

#[test]
fn only_the_deciding_branch_adds_headers() {
    // a allows inside a branch that fails (b says no): its header must not reach the upstream.
    let outcomes = [allow("x-a"), Outcome::deny(401), allow("x-c"), Outcome::deny(403)];
    let (outcome, _) = run("(a && b) || c", &outcomes);
    assert_eq!(
        outcome,
        Outcome::Allow {
            upstream_headers: vec![("x-c".into(), "1".into())],
        }
    );
}

#[test]
fn deep_or_long_expressions_are_refused() {
    let deep = format!("{}a{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert!(Expr::parse(&deep, &names()).unwrap_err().message.contains("nested"));
    let nots = format!("{}a", "!".repeat(10_000));
    assert!(Expr::parse(&nots, &names()).is_err());
    let long = vec!["a"; MAX_LENGTH].join(" || ");
    assert!(Expr::parse(&long, &names()).unwrap_err().message.contains("longer"));
    let fine = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(Expr::parse(&fine, &names()), Ok(Expr::Config(0)));
}
