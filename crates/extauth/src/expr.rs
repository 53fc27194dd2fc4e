//! Gloo's `booleanExpr`: config names joined by `&&`, `||`, `!` and parentheses, evaluated left
//! to right with short-circuiting. Without an expression every config must allow, in order.
//!
//! The walk is async and generic over the check of one config, so the server can run its
//! evaluators (some of which do I/O) while the combining rules stay here, pure and tested:
//! - each config runs at most once per request, however often the expression names it;
//! - on allow, the upstream headers of the configs on the branch that decided are merged, in
//!   order (a config that allowed inside a branch that failed adds nothing);
//! - on deny, the client gets the deny of the last config that denied (so basic auth's 401 and
//!   its `www-authenticate` reach the browser), or a plain 403 when none did (`!basic1`);
//! - a config that could not decide (a 5xx deny: its directory, provider or server is down) is an
//!   error, not a "no": `!` does not turn it into an allow, and `&&` with it fails.
//!
//! Expressions are at most [`MAX_DEPTH`] levels deep and [`MAX_LENGTH`] bytes long, so a
//! hostile config cannot exhaust the stack of whoever parses or evaluates it.

use std::future::Future;
use std::pin::Pin;

use crate::Outcome;

/// A parsed expression; names are indexes into the config's list of steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Config(usize),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// What is wrong with an expression and at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at character {}: {}", self.position + 1, self.message)
    }
}

/// Deepest nesting of `!` and parentheses an expression may have.
pub const MAX_DEPTH: usize = 32;
/// Longest expression accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;

impl Expr {
    /// Parses `text`; `names` are the configs' names, in order.
    pub fn parse(text: &str, names: &[String]) -> Result<Expr, ExprError> {
        if text.len() > MAX_LENGTH {
            return Err(ExprError {
                position: MAX_LENGTH,
                message: format!("longer than {MAX_LENGTH} bytes"),
            });
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            next: 0,
            names,
            end: text.len(),
            depth: 0,
        };
        let expr = parser.or()?;
        match parser.peek() {
            None => Ok(expr),
            Some((position, token)) => Err(ExprError {
                position,
                message: format!("unexpected {}", token.describe()),
            }),
        }
    }

    /// Every config, in order, all of which must allow (the default without an expression).
    pub fn all(count: usize) -> Option<Expr> {
        (0..count)
            .map(Expr::Config)
            .reduce(|left, right| Expr::And(Box::new(left), Box::new(right)))
    }

    /// Evaluates the expression, calling `check(index)` for each config it needs, at most once each.
    pub async fn evaluate<F, Fut>(&self, count: usize, mut check: F) -> Outcome
    where
        F: FnMut(usize) -> Fut + Send,
        Fut: Future<Output = Outcome> + Send,
    {
        let mut state = State {
            results: vec![None; count],
            last_deny: None,
            last_error: None,
        };
        let truth = walk(self, &mut check, &mut state).await;
        if truth == Truth::Yes {
            let mut upstream_headers = Vec::new();
            deciding_headers(self, &state.results, &mut upstream_headers);
            Outcome::Allow { upstream_headers }
        } else if truth == Truth::Error {
            // The answer is "could not decide": say so (503), not "no".
            state
                .last_error
                .or(state.last_deny)
                .unwrap_or_else(|| Outcome::deny(503))
        } else {
            state.last_deny.unwrap_or_else(|| Outcome::deny(403))
        }
    }
}

/// A config's answer inside an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Yes,
    No,
    /// The config could not decide (a 5xx deny): never turned into a yes.
    Error,
}

impl Truth {
    fn of(outcome: &Outcome) -> Truth {
        match outcome {
            Outcome::Allow { .. } => Truth::Yes,
            Outcome::Deny { status, .. } if *status >= 500 => Truth::Error,
            Outcome::Deny { .. } => Truth::No,
        }
    }
}

/// The upstream headers of the configs that made `expr` true, in order: both sides of an `&&`,
/// the first true side of an `||`, nothing under a `!` (its inner configs said no).
fn deciding_headers(expr: &Expr, results: &[Option<Outcome>], out: &mut Vec<(String, String)>) {
    match expr {
        Expr::Config(index) => {
            if let Some(Some(Outcome::Allow { upstream_headers })) = results.get(*index) {
                for header in upstream_headers {
                    if !out.contains(header) {
                        out.push(header.clone());
                    }
                }
            }
        }
        Expr::Not(_) => {}
        Expr::And(left, right) => {
            deciding_headers(left, results, out);
            deciding_headers(right, results, out);
        }
        Expr::Or(left, right) => {
            let side = if settled_true(left, results) { left } else { right };
            deciding_headers(side, results, out);
        }
    }
}

/// Whether `expr` evaluated to true, from the recorded results (unevaluated configs are false).
fn settled_true(expr: &Expr, results: &[Option<Outcome>]) -> bool {
    match expr {
        Expr::Config(index) => matches!(results.get(*index), Some(Some(outcome)) if outcome.is_allow()),
        Expr::Not(inner) => matches!(settled(inner, results), Some(Truth::No)),
        Expr::And(left, right) => settled_true(left, results) && settled_true(right, results),
        Expr::Or(left, right) => settled_true(left, results) || settled_true(right, results),
    }
}

fn settled(expr: &Expr, results: &[Option<Outcome>]) -> Option<Truth> {
    match expr {
        Expr::Config(index) => results.get(*index)?.as_ref().map(Truth::of),
        _ => Some(if settled_true(expr, results) {
            Truth::Yes
        } else {
            Truth::No
        }),
    }
}

struct State {
    results: Vec<Option<Outcome>>,
    last_deny: Option<Outcome>,
    last_error: Option<Outcome>,
}

type Walk<'a> = Pin<Box<dyn Future<Output = Truth> + Send + 'a>>;

fn walk<'a, F, Fut>(expr: &'a Expr, check: &'a mut F, state: &'a mut State) -> Walk<'a>
where
    F: FnMut(usize) -> Fut + Send,
    Fut: Future<Output = Outcome> + Send,
{
    Box::pin(async move {
        match expr {
            Expr::Config(index) => {
                if let Some(Some(done)) = state.results.get(*index) {
                    return Truth::of(done);
                }
                let outcome = check(*index).await;
                let truth = Truth::of(&outcome);
                match truth {
                    Truth::Yes => {}
                    Truth::No => state.last_deny = Some(outcome.clone()),
                    Truth::Error => state.last_error = Some(outcome.clone()),
                }
                if let Some(slot) = state.results.get_mut(*index) {
                    *slot = Some(outcome);
                }
                truth
            }
            Expr::Not(inner) => match walk(inner, check, state).await {
                Truth::Yes => Truth::No,
                Truth::No => Truth::Yes,
                Truth::Error => Truth::Error,
            },
            Expr::And(left, right) => match walk(left, check, state).await {
                Truth::Yes => walk(right, check, state).await,
                other => other,
            },
            Expr::Or(left, right) => match walk(left, check, state).await {
                Truth::Yes => Truth::Yes,
                // Another config may still authorize on its own; an error stays one otherwise.
                first => match walk(right, check, state).await {
                    Truth::Yes => Truth::Yes,
                    Truth::No if first == Truth::Error => Truth::Error,
                    second => second,
                },
            },
        }
    })
}

// === parsing ===

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Name(name) => format!("name {name:?}"),
            Token::And => "`&&`".into(),
            Token::Or => "`||`".into(),
            Token::Not => "`!`".into(),
            Token::Open => "`(`".into(),
            Token::Close => "`)`".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let (token, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'&' if bytes.get(i + 1) == Some(&b'&') => (Token::And, 2),
            b'|' if bytes.get(i + 1) == Some(&b'|') => (Token::Or, 2),
            b'!' => (Token::Not, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            c if is_name_byte(c) => {
                let len = bytes[i..].iter().take_while(|b| is_name_byte(**b)).count();
                (Token::Name(text[i..i + len].to_string()), len)
            }
            _ => {
                return Err(ExprError {
                    position: i,
                    message: format!(
                        "unexpected character {:?} (use config names, &&, ||, ! and parentheses)",
                        text[i..].chars().next().unwrap_or('?')
                    ),
                });
            }
        };
        tokens.push((i, token));
        i += len;
    }
    Ok(tokens)
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':' | b'/')
}

struct Parser<'a> {
    tokens: &'a [(usize, Token)],
    next: usize,
    names: &'a [String],
    end: usize,
    /// `!` and `(` currently open around the parse position.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn deeper(&mut self, position: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError {
                position,
                message: format!("nested more than {MAX_DEPTH} levels deep"),
            });
        }
        Ok(())
    }

    fn peek(&self) -> Option<(usize, &'a Token)> {
        self.tokens.get(self.next).map(|(p, t)| (*p, t))
    }

    /// or := and ("||" and)*
    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while let Some((_, Token::Or)) = self.peek() {
            self.next += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    /// and := unary ("&&" unary)*
    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while let Some((_, Token::And)) = self.peek() {
            self.next += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    /// unary := "!" unary | "(" or ")" | name
    fn unary(&mut self) -> Result<Expr, ExprError> {
        let Some((position, token)) = self.peek() else {
            return Err(ExprError {
                position: self.end,
                message: "expected a config name, `!` or `(`, found the end".into(),
            });
        };
        self.next += 1;
        match token {
            Token::Not => {
                self.deeper(position)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Token::Open => {
                self.deeper(position)?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some((_, Token::Close)) => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => Err(ExprError {
                        position,
                        message: "`(` is never closed".into(),
                    }),
                }
            }
            Token::Name(name) => match self.names.iter().position(|n| n == name) {
                Some(index) => Ok(Expr::Config(index)),
                None => Err(ExprError {
                    position,
                    message: format!("no config is named {name:?} (names: {})", self.names.join(", ")),
                }),
            },
            other => Err(ExprError {
                position,
                message: format!("expected a config name, `!` or `(`, found {}", other.describe()),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
