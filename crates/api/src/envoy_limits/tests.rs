use super::*;

/// Program sizes Envoy 1.40 reported for these regexes (runtime `re2.max_program_size.error_level`
/// set to 0 makes it print each one's size in the error).
const MEASURED: [(&str, u64); 44] = [
    ("a", 5),
    ("ab", 6),
    ("abc", 7),
    ("^abc$", 4),
    ("^abc", 4),
    ("abc$", 7),
    ("[0-9]+", 6),
    ("/v[0-9]+", 8),
    ("[a-z]", 5),
    ("[a-zA-Z0-9._-]", 8),
    ("[a-zA-Z0-9._-]+", 9),
    ("(a)", 7),
    ("(?:a)", 5),
    ("a|b", 5),
    ("abc|abd", 7),
    ("abc|xyz", 10),
    ("foo|bar|baz", 11),
    ("a*", 5),
    ("a+", 6),
    ("a?", 6),
    ("a{3}", 7),
    ("a{2,5}", 12),
    ("a{2,}", 7),
    (".", 6),
    ("(?s).", 5),
    (".*", 6),
    ("/api/.*", 11),
    ("(?i)abc", 7),
    ("(?i)/api/.*", 11),
    ("é", 6),
    ("[é]", 6),
    ("[^a]", 6),
    ("\\d", 5),
    ("\\w", 7),
    ("\\s", 7),
    ("\\b", 5),
    ("[[:alpha:]]", 5),
    ("^/api/v[0-9]+/users/[a-z0-9-]+/orders/.*$", 27),
    ("(?i)/api/v[0-9]+/users", 18),
    ("x{0,200}", 404),
    ("[a-z]{10}", 14),
    ("(ab){5}", 24),
    ("((a|b)c)*", 10),
    ("a{100}", 104),
];

#[test]
fn program_size_estimate_never_exceeds_what_re2_measured() {
    for (pattern, measured) in MEASURED {
        let hir = regex_syntax::Parser::new().parse(pattern).unwrap();
        let estimate = min_program_size(&hir);
        assert!(
            estimate <= measured,
            "{pattern}: estimate {estimate} > measured {measured}"
        );
        // The refusal follows: every pattern Envoy accepted (<= 100) passes here.
        assert_eq!(
            regex_problem(pattern).is_ok(),
            measured <= RE2_MAX_PROGRAM_SIZE,
            "{pattern}"
        );
    }
}

#[test]
fn refuses_regexes_envoy_would_refuse_with_a_reason() {
    let cases = [
        ("a{100}", "at least 102 instructions, Envoy allows 100"),
        ("(a{50}){50}", "too complex for Envoy"),
        ("x{0,200}", "too complex for Envoy"),
        ("a{1001}", "repetition count 1001"),
        ("(", "invalid regular expression"),
        ("a(?=b)", "invalid regular expression"),
        ("(?x)a b", "the flag 'x' is not supported"),
        ("(?u)a", "the flag 'u'"),
        ("(?R)a", "the flag 'R'"),
        ("[a-z&&[^b]]", "&& in a character class"),
        ("[a[b]]", "'[' inside a character class"),
        ("[a-z&&b]", "&& in a character class"),
        ("[a--b]", "-- in a character class"),
        ("[a~~b]", "~~ in a character class"),
        ("\\<word", "\\< is a word-boundary"),
        ("\\b{start}a", "\\b is a word-boundary"),
    ];
    for (pattern, expected) in cases {
        let message = regex_problem(pattern).unwrap_err();
        assert!(message.contains(expected), "{pattern}: {message}");
    }
    let long = "a".repeat(MAX_REGEX_BYTES + 1);
    assert!(regex_problem(&long).unwrap_err().contains("at most 1024"));
}

#[test]
fn accepts_regexes_both_engines_read_alike() {
    for pattern in [
        "/v[0-9]+",
        "(?i)/api/.*",
        "(?P<id>[0-9]+)",
        "(?<id>[0-9]+)",
        "(?i:abc)",
        "(?-s:.)",
        "[]a]",
        "[^]a]",
        "[[:alpha:]]+",
        "[a-]",
        "\\[x\\]",
        "\\bword\\b",
        "^/static/.*\\.(css|js|png)$",
        "a{96}",
    ] {
        assert_eq!(regex_problem(pattern), Ok(()), "{pattern}");
    }
}

#[test]
fn header_values_follow_envoys_formatter() {
    let accepted = [
        "plain",
        "%%",
        "a%%b%%",
        "%REQ(x-user)%",
        "%REQ(x-user):10%",
        "%START_TIME%",
        "%START_TIME(%Y)%",
        "%DOWNSTREAM_REMOTE_ADDRESS%",
        "é",
    ];
    for value in accepted {
        assert_eq!(check_format(value), Ok(()), "{value}");
    }
    for value in [
        "a%b",
        "100%",
        "%FOO%",
        "%REQ()%",
        "%REQ(x)",
        "%req(x)%",
        "%%%",
        "%REQ(x-a)%%",
        "%START_TIME(%",
    ] {
        assert!(check_format(value).is_err(), "{value}");
    }
    let mut problems = Problems::new();
    check_header_value(&mut problems, "f", "a\r\nb");
    check_header_value(&mut problems, "g", &"x".repeat(MAX_HEADER_BYTES + 1));
    check_header_value(&mut problems, "h", &"x".repeat(MAX_HEADER_BYTES));
    let fields: Vec<_> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["f", "g"]);
}

#[test]
fn weight_sums_up_to_u32_max_pass() {
    let mut problems = Problems::new();
    check_weight_sum(&mut problems, "ok", [Some(u32::MAX - 1), Some(1), None].into_iter());
    check_weight_sum(&mut problems, "over", [Some(u32::MAX), Some(u32::MAX)].into_iter());
    check_weight_sum(&mut problems, "over-by-one", [Some(u32::MAX), Some(1)].into_iter());
    let fields: Vec<_> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["over", "over-by-one"]);
    assert!(problems[0].1.contains("add up to 8589934590"), "{}", problems[0].1);
}

#[test]
fn durations_within_envoys_range_pass() {
    let mut problems = Problems::new();
    let ms = Duration::from_millis(1);
    check_duration(&mut problems, "max", Some("9223372035s"), ms);
    check_duration(&mut problems, "min", Some("1ms"), ms);
    check_duration(&mut problems, "zero", Some("0s"), Duration::ZERO);
    check_duration(&mut problems, "over", Some("9223372036s"), ms);
    check_duration(&mut problems, "attacker", Some("99999999999h"), ms);
    check_duration(&mut problems, "short", Some("0.0001s"), ms);
    check_duration(&mut problems, "negative", Some("-5s"), ms);
    let fields: Vec<_> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["over", "attacker", "short", "negative"]);
    assert_eq!(
        problems[1].1,
        "duration 99999999999h is too large: at most 9223372035.999999999s (about 292 years) (Envoy's limit)"
    );
}

#[test]
fn status_codes_are_envoys_defined_ones() {
    let mut problems = Problems::new();
    for status in [200, 403, 429, 503] {
        check_defined_status(&mut problems, "ok", status);
    }
    for status in [299, 418, 599] {
        check_defined_status(&mut problems, "bad", status);
    }
    assert_eq!(problems.len(), 3);
    assert!(problems.iter().all(|(f, _)| f == "bad"));
}
