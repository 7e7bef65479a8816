//! Scaled time: scenarios speak in simulated seconds (an LRO "takes 90 s"), and the clock
//! turns them into real time so that a whole upgrade takes seconds in tests.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Real seconds per simulated second (0.01 = a hundred times faster than life).
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Self { scale }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The real duration of `simulated`.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.mul_f64(self.scale)
    }

    /// Sleeps for `simulated` seconds of simulated time.
    pub async fn sleep(&self, simulated: Duration) {
        tokio::time::sleep(self.real(simulated)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_simulated_time() {
        let clock = Clock::new(0.01);
        assert_eq!(clock.real(Duration::from_secs(100)), Duration::from_secs(1));
    }

    #[test]
    fn rejects_nonsense_scales() {
        assert_eq!(Clock::new(0.0).scale(), 1.0);
        assert_eq!(Clock::new(f64::NAN).scale(), 1.0);
        assert_eq!(Clock::new(-2.0).scale(), 1.0);
    }
}
