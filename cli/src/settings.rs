//! The values `queues set` takes, read on the command line (so that a bad one is refused before
//! any request), and as `PUT /queues/{name}` takes them.

use serde_json::{Value, json};

use crate::duration::{TOO_LONG, UNIT_NAMES, parse_ms};

/// `--concurrency`: the most jobs of a queue running at once, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    AtMost(u32),
    NoLimit,
}

impl Concurrency {
    /// A whole number, or `none`. Its range (from 1) is the API's to check.
    pub fn parse(text: &str) -> Result<Concurrency, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Concurrency::NoLimit);
        }
        text.parse()
            .map(Concurrency::AtMost)
            .map_err(|_| "the concurrency is a whole number or `none`".to_owned())
    }

    pub fn to_json(self) -> Value {
        match self {
            Concurrency::AtMost(n) => json!(n),
            Concurrency::NoLimit => Value::Null,
        }
    }
}

/// `--rate`: at most `limit` job starts in any window of `period_ms`, or no rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Limit { limit: u32, period_ms: u64 },
    NoLimit,
}

impl Rate {
    /// `LIMIT/PERIOD` (`5/1s`, `100/1m`; `5/s` is `5/1s`), or `none`. The ranges (a limit from 1,
    /// a period from 1 ms to a day) are the API's to check.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Rate::NoLimit);
        }
        let Some((limit, period)) = text.split_once('/') else {
            return Err("a rate is LIMIT/PERIOD, such as 5/1s or 100/1m, or `none`".to_owned());
        };
        let limit = limit.trim().parse::<u32>().map_err(|_| {
            "a rate is LIMIT/PERIOD, such as 5/1s or 100/1m: the limit before the / is a whole number of job starts"
                .to_owned()
        })?;
        let period = period.trim();
        // `5/s`: five a second.
        let period = if period.starts_with(|c: char| c.is_ascii_alphabetic()) {
            format!("1{period}")
        } else {
            period.to_owned()
        };
        let period_ms = parse_ms(&period).map_err(|err| format!("the period after the / is {err}"))?;
        Ok(Rate::Limit { limit, period_ms })
    }

    /// The API's `rateLimit`, counted per value of the payload field `key` when there is one.
    pub fn to_json(self, key: Option<&str>) -> Result<Value, String> {
        match (self, key) {
            (Rate::NoLimit, None) => Ok(Value::Null),
            (Rate::NoLimit, Some(_)) => Err(
                "--rate-key names the payload field a rate limit is counted per: it goes with --rate LIMIT/PERIOD, not --rate none"
                    .to_owned(),
            ),
            (Rate::Limit { limit, period_ms }, key) => {
                let mut rate = json!({"limit": limit, "periodMs": period_ms});
                if let Some(key) = key {
                    rate["key"] = json!(key);
                }
                Ok(rate)
            }
        }
    }
}

/// `--retain-completed`, `--retain-cancelled`, `--retain-dead`: how long a queue keeps its
/// finished jobs of one final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// So many milliseconds from when they finished.
    For(u64),
    /// For ever (the API's 0).
    Forever,
    /// The deployment's default (`JOBQ_RETAIN_*_MS`; the API's `null`).
    Default,
}

impl Retain {
    /// A duration, `forever` or `default`. A duration of 0 is refused: the API would read it as
    /// "for ever", the opposite of what it seems to say.
    pub fn parse(text: &str) -> Result<Retain, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") {
            return Ok(Retain::Forever);
        }
        if text.eq_ignore_ascii_case("default") {
            return Ok(Retain::Default);
        }
        match parse_ms(text) {
            Ok(0) => Err(
                "a retention of 0 is ambiguous: write `forever` to keep the jobs for ever, or a duration longer than 0"
                    .to_owned(),
            ),
            Ok(ms) => Ok(Retain::For(ms)),
            Err(err) if err == TOO_LONG => Err(err),
            Err(_) => Err(format!(
                "a retention is a duration such as 7d, 12h or 1h30m (units: {UNIT_NAMES}), `forever` or `default`"
            )),
        }
    }

    pub fn to_json(self) -> Value {
        match self {
            Retain::For(ms) => json!(ms),
            Retain::Forever => json!(0),
            Retain::Default => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concurrency_is_a_whole_number_or_none() {
        assert_eq!(Concurrency::parse("3"), Ok(Concurrency::AtMost(3)));
        assert_eq!(Concurrency::parse("None"), Ok(Concurrency::NoLimit));
        assert!(Concurrency::parse("lots").is_err());
        assert!(Concurrency::parse("-1").is_err());
        assert_eq!(Concurrency::AtMost(3).to_json(), json!(3));
        assert_eq!(Concurrency::NoLimit.to_json(), Value::Null);
    }

    #[test]
    fn a_rate_is_a_limit_over_a_period() {
        let five_a_second = Rate::Limit {
            limit: 5,
            period_ms: 1000,
        };
        assert_eq!(Rate::parse("5/1s"), Ok(five_a_second));
        assert_eq!(Rate::parse("5/s"), Ok(five_a_second));
        assert_eq!(Rate::parse(" 5 / 1s "), Ok(five_a_second));
        assert_eq!(
            Rate::parse("100/1m30s"),
            Ok(Rate::Limit {
                limit: 100,
                period_ms: 90_000
            })
        );
        assert_eq!(Rate::parse("none"), Ok(Rate::NoLimit));
        for bad in ["5", "5/", "/1s", "x/1s", "5/1", "5/1y", "-5/1s"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Rate::parse("5/1y"),
            Err(
                "the period after the / is \"y\" is not a unit of time: write a whole number and a unit \
                 (ms, s, m, h, d or w), such as 500ms, 30s, 12h, 7d or 1h30m"
                    .to_owned()
            )
        );
    }

    #[test]
    fn a_rate_goes_to_the_api_with_its_key_and_none_takes_no_key() {
        let rate = Rate::Limit {
            limit: 5,
            period_ms: 1000,
        };
        assert_eq!(rate.to_json(None), Ok(json!({"limit": 5, "periodMs": 1000})));
        assert_eq!(
            rate.to_json(Some("customer.id")),
            Ok(json!({"limit": 5, "periodMs": 1000, "key": "customer.id"}))
        );
        assert_eq!(Rate::NoLimit.to_json(None), Ok(Value::Null));
        assert!(Rate::NoLimit.to_json(Some("customer.id")).is_err());
    }

    #[test]
    fn a_retention_is_a_duration_forever_or_the_default() {
        assert_eq!(Retain::parse("7d"), Ok(Retain::For(604_800_000)));
        assert_eq!(Retain::parse("12h"), Ok(Retain::For(43_200_000)));
        assert_eq!(Retain::parse("forever"), Ok(Retain::Forever));
        assert_eq!(Retain::parse("default"), Ok(Retain::Default));
        assert_eq!(Retain::For(604_800_000).to_json(), json!(604_800_000_u64));
        assert_eq!(Retain::Forever.to_json(), json!(0));
        assert_eq!(Retain::Default.to_json(), Value::Null);
        let zero = Retain::parse("0d").expect_err("0d");
        assert!(zero.contains("`forever`"), "{zero}");
        let bad = Retain::parse("7x").expect_err("7x");
        assert_eq!(
            bad,
            "a retention is a duration such as 7d, 12h or 1h30m (units: ms, s, m, h, d or w), `forever` or `default`"
        );
        assert_eq!(Retain::parse("99999999999999999999d"), Err(TOO_LONG.to_owned()));
    }
}
