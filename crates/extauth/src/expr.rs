//! Gloo's `booleanExpr`: config names joined by `&&`, `||`, `!` and parentheses, evaluated left
//! to right with short-circuiting. Without an expression every config must allow, in order.
//!
//! The walk is async and generic over the check of one config, so the server can run its
//! evaluators (some of which do I/O) while the combining rules stay here, pure and tested:
//! - each config runs at most once per request, however often the expression names it;
//! - on allow, the upstream headers of every config that allowed are merged, in order;
//! - on deny, the client gets the deny of the last config that denied (so basic auth's 401 and
//!   its `www-authenticate` reach the browser), or a plain 403 when none did (`!basic1`).

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

impl Expr {
    /// Parses `text`; `names` are the configs' names, in order.
    pub fn parse(text: &str, names: &[String]) -> Result<Expr, ExprError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            next: 0,
            names,
            end: text.len(),
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
        };
        let allowed = walk(self, &mut check, &mut state).await;
        if allowed {
            let upstream_headers = state
                .results
                .into_iter()
                .flatten()
                .flat_map(|outcome| match outcome {
                    Outcome::Allow { upstream_headers } => upstream_headers,
                    Outcome::Deny { .. } => Vec::new(),
                })
                .collect();
            Outcome::Allow { upstream_headers }
        } else {
            state.last_deny.unwrap_or_else(|| Outcome::deny(403))
        }
    }
}

struct State {
    results: Vec<Option<Outcome>>,
    last_deny: Option<Outcome>,
}

type Walk<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

fn walk<'a, F, Fut>(expr: &'a Expr, check: &'a mut F, state: &'a mut State) -> Walk<'a>
where
    F: FnMut(usize) -> Fut + Send,
    Fut: Future<Output = Outcome> + Send,
{
    Box::pin(async move {
        match expr {
            Expr::Config(index) => {
                if let Some(Some(done)) = state.results.get(*index) {
                    return done.is_allow();
                }
                let outcome = check(*index).await;
                let allowed = outcome.is_allow();
                if !allowed {
                    state.last_deny = Some(outcome.clone());
                }
                if let Some(slot) = state.results.get_mut(*index) {
                    *slot = Some(outcome);
                }
                allowed
            }
            Expr::Not(inner) => !walk(inner, check, state).await,
            Expr::And(left, right) => walk(left, check, state).await && walk(right, check, state).await,
            Expr::Or(left, right) => walk(left, check, state).await || walk(right, check, state).await,
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
}

impl<'a> Parser<'a> {
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
            Token::Not => Ok(Expr::Not(Box::new(self.unary()?))),
            Token::Open => {
                let inner = self.or()?;
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
