//! Pacing a demo producer at a rate, up to tens of thousands per second.

use std::time::Duration;

/// How a rate is paced: `per_tick` events every `every` (ticks of at least 1 ms, so
/// rates above 1,000/s send several per tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Events per tick.
    pub per_tick: u32,
    /// The tick interval.
    pub every: Duration,
}

impl Pace {
    /// The pace of `rate` events per second (at least 1).
    pub fn new(rate: u32) -> Self {
        let rate = rate.max(1);
        let per_tick = rate.div_ceil(1000);
        Self {
            per_tick,
            every: Duration::from_secs_f64(f64::from(per_tick) / f64::from(rate)),
        }
    }
}

/// How many events `rate` per second owes after `elapsed` (a producer that sends
/// what is due instead of `per_tick` holds the rate whatever one send costs).
pub fn due_by(elapsed: Duration, rate: u32) -> u64 {
    (elapsed.as_secs_f64() * f64::from(rate.max(1))) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_rates_send_several_per_tick() {
        assert_eq!(
            Pace::new(5),
            Pace {
                per_tick: 1,
                every: Duration::from_millis(200)
            }
        );
        assert_eq!(Pace::new(1000).every, Duration::from_millis(1));
        let fast = Pace::new(10_000);
        assert_eq!((fast.per_tick, fast.every), (10, Duration::from_millis(1)));
        assert_eq!(Pace::new(0).per_tick, 1);
    }

    /// The debt grows with time, not with how many sends were made.
    #[test]
    fn the_debt_follows_the_clock() {
        assert_eq!(due_by(Duration::from_millis(1), 10_000), 10);
        assert_eq!(due_by(Duration::from_millis(250), 10_000), 2_500);
        assert_eq!(due_by(Duration::from_secs(2), 5), 10);
        assert_eq!(due_by(Duration::from_secs(1), 0), 1);
    }
}
