//! `spec.schedule`: the standard five-field cron expression (or `@daily` and friends) in
//! `spec.timeZone`, and when it next fires. `jiff-cron` reads cron with a seconds field and
//! numbers weekdays from Sunday = 1, so the standard form is translated for it.

use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A job's schedule.
#[derive(Debug)]
pub struct Schedule {
    cron: jiff_cron::Schedule,
    zone: TimeZone,
}

impl Schedule {
    /// Parses `expression` in `time_zone` (UTC when `None`); `Err` says what is wrong, naming
    /// the field.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let zone = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name)
                .map_err(|_| format!("spec.timeZone {name:?} is not an IANA time zone such as Europe/Berlin"))?,
        };
        let cron = jiff_cron::Schedule::from_str(&for_jiff_cron(expression)).map_err(|error| {
            format!("spec.schedule {expression:?} is not a cron expression this operator reads ({error}); write five fields such as \"0 2 * * *\" or @daily")
        })?;
        Ok(Self { cron, zone })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron.after(after.to_zoned(self.zone.clone())).next().map(|zoned| zoned.timestamp())
    }
}

/// The standard form (`min hour day month weekday`, weekdays 0-7 from Sunday) in the form
/// `jiff-cron` reads (`sec min hour day month weekday year`, weekdays by name).
fn for_jiff_cron(expression: &str) -> String {
    let expression = expression.trim();
    if expression.starts_with('@') {
        return expression.to_owned();
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = fields[..] else { return expression.to_owned() };
    format!("0 {minute} {hour} {day} {month} {} *", weekday_names(weekday))
}

/// Weekday numbers as names (`1-5` → `Mon-Fri`); a step (`*/2`) keeps its number.
fn weekday_names(field: &str) -> String {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let name = |token: &str| match token.parse::<usize>() {
        Ok(number) if number < NAMES.len() => NAMES[number].to_owned(),
        _ => token.to_owned(),
    };
    field
        .split(',')
        .map(|part| {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            let range = range.split('-').map(name).collect::<Vec<_>>().join("-");
            match step {
                Some(step) => format!("{range}/{step}"),
                None => range,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn standard_cron_fires_when_it_says() {
        let nightly = Schedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(nightly.next_after(at("2026-12-02T01:59:00Z")), Some(at("2026-12-02T02:00:00Z")));
        assert_eq!(nightly.next_after(at("2026-12-02T02:00:00Z")), Some(at("2026-12-03T02:00:00Z")));
        // 2026-12-05 is a Saturday: weekdays skip to Monday the 7th.
        let weekdays = Schedule::parse("30 6 * * 1-5", None).unwrap();
        assert_eq!(weekdays.next_after(at("2026-12-05T00:00:00Z")), Some(at("2026-12-07T06:30:00Z")));
        let sundays = Schedule::parse("0 0 * * 0", None).unwrap();
        assert_eq!(sundays.next_after(at("2026-12-02T00:00:00Z")), Some(at("2026-12-06T00:00:00Z")));
        let daily = Schedule::parse("@daily", None).unwrap();
        assert_eq!(daily.next_after(at("2026-12-02T10:00:00Z")), Some(at("2026-12-03T00:00:00Z")));
    }

    #[test]
    fn every_form_admission_accepts_is_read() {
        for expression in [
            "0 2 * * *",
            "*/15 * * * 1-5",
            "@daily",
            "@yearly",
            "0 0 1 JAN *",
            "0 0 * * MON-FRI",
            "5,35 */2 1-15 * 0,6",
        ] {
            assert!(Schedule::parse(expression, None).is_ok(), "{expression}");
        }
    }

    #[test]
    fn a_time_zone_moves_the_firing_time() {
        let berlin = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(berlin.next_after(at("2026-12-02T00:00:00Z")), Some(at("2026-12-02T01:00:00Z")));
    }

    #[test]
    fn bad_schedules_and_zones_name_their_field() {
        assert!(Schedule::parse("0 2 * *", None).unwrap_err().contains("spec.schedule"));
        assert!(Schedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err().contains("spec.timeZone"));
        assert_eq!(weekday_names("0,6/2"), "Sun,Sat/2");
    }
}
