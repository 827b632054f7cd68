//! Stage limits: defaults, maximums and per-request choices.

use std::time::Duration;

use evald_sandbox::Limits;

/// Limits a request may ask for; `None` takes the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRequest {
    pub wall_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub processes: Option<u32>,
    pub output_bytes: Option<u64>,
    pub open_files: Option<u32>,
    pub disk_bytes: Option<u64>,
    /// Each process's stack.
    pub stack_bytes: Option<u64>,
    /// Each process's address space, on top of the box's memory (`None`:
    /// no per-process bound).
    pub process_memory_bytes: Option<u64>,
}

/// The defaults and maximums of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLimits {
    pub default: Limits,
    pub max: Limits,
}

/// A requested limit the service does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{stage} {field} cannot exceed the configured limit of {max}")]
    TooLarge { stage: &'static str, field: &'static str, max: u64 },
    #[error("{stage} {field} must be greater than zero")]
    Zero { stage: &'static str, field: &'static str },
}

impl StageLimits {
    pub fn compile_defaults() -> StageLimits {
        StageLimits {
            default: Limits {
                wall_time: Duration::from_secs(10),
                cpu_time: Duration::from_secs(10),
                memory_bytes: 512 << 20,
                processes: 128,
                file_size_bytes: 128 << 20,
                open_files: 512,
                output_bytes: 1 << 20,
                disk_bytes: 256 << 20,
                stack_bytes: evald_sandbox::DEFAULT_STACK_BYTES,
                process_memory_bytes: None,
            },
            max: Limits {
                wall_time: Duration::from_secs(60),
                cpu_time: Duration::from_secs(60),
                memory_bytes: 4 << 30,
                processes: 512,
                file_size_bytes: 512 << 20,
                open_files: 4096,
                output_bytes: 16 << 20,
                disk_bytes: 1 << 30,
                stack_bytes: 1 << 30,
                process_memory_bytes: None,
            },
        }
    }

    pub fn run_defaults() -> StageLimits {
        StageLimits {
            default: Limits {
                wall_time: Duration::from_secs(3),
                cpu_time: Duration::from_secs(3),
                memory_bytes: 256 << 20,
                processes: 64,
                file_size_bytes: 64 << 20,
                open_files: 256,
                output_bytes: 1 << 20,
                disk_bytes: 64 << 20,
                stack_bytes: evald_sandbox::DEFAULT_STACK_BYTES,
                process_memory_bytes: None,
            },
            max: Limits {
                wall_time: Duration::from_secs(30),
                cpu_time: Duration::from_secs(30),
                memory_bytes: 2 << 30,
                processes: 256,
                file_size_bytes: 256 << 20,
                open_files: 4096,
                output_bytes: 16 << 20,
                disk_bytes: 512 << 20,
                stack_bytes: 1 << 30,
                process_memory_bytes: None,
            },
        }
    }

    /// The limits of a stage: the requested value, else the larger of the
    /// default and the language's floor; never above the maximum.
    pub fn resolve(&self, stage: &'static str, req: &LimitRequest, floor: &LimitRequest) -> Result<Limits, LimitError> {
        let d = &self.default;
        let m = &self.max;
        let pick = |field: &'static str, asked: Option<u64>, floor: Option<u64>, default: u64, max: u64| match asked {
            Some(0) => Err(LimitError::Zero { stage, field }),
            Some(v) if v > max => Err(LimitError::TooLarge { stage, field, max }),
            Some(v) => Ok(v),
            None => Ok(floor.map_or(default, |f| f.max(default)).min(max)),
        };
        let ms = |d: Duration| d.as_millis() as u64;
        Ok(Limits {
            wall_time: Duration::from_millis(pick(
                "wall_ms",
                req.wall_ms,
                floor.wall_ms,
                ms(d.wall_time),
                ms(m.wall_time),
            )?),
            cpu_time: Duration::from_millis(pick("cpu_ms", req.cpu_ms, floor.cpu_ms, ms(d.cpu_time), ms(m.cpu_time))?),
            memory_bytes: pick("memory_bytes", req.memory_bytes, floor.memory_bytes, d.memory_bytes, m.memory_bytes)?,
            processes: pick(
                "processes",
                req.processes.map(u64::from),
                floor.processes.map(u64::from),
                d.processes.into(),
                m.processes.into(),
            )? as u32,
            file_size_bytes: d.file_size_bytes,
            open_files: pick(
                "open_files",
                req.open_files.map(u64::from),
                floor.open_files.map(u64::from),
                d.open_files.into(),
                m.open_files.into(),
            )? as u32,
            output_bytes: pick("output_bytes", req.output_bytes, None, d.output_bytes, m.output_bytes)?,
            disk_bytes: pick("disk_bytes", req.disk_bytes, floor.disk_bytes, d.disk_bytes, m.disk_bytes)?,
            stack_bytes: pick("stack_bytes", req.stack_bytes, floor.stack_bytes, d.stack_bytes, m.stack_bytes)?,
            // Never above the box's own memory bound.
            process_memory_bytes: match req.process_memory_bytes {
                Some(v) => Some(pick("process_memory_bytes", Some(v), None, v, m.memory_bytes)?),
                None => d.process_memory_bytes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_floors_and_maximums() {
        let s = StageLimits::run_defaults();
        let none = LimitRequest::default();
        let l = s.resolve("run", &none, &none).expect("defaults");
        assert_eq!(l, s.default);
        let floor = LimitRequest { memory_bytes: Some(1 << 30), processes: Some(8), ..none };
        let l = s.resolve("run", &none, &floor).expect("floor");
        assert_eq!((l.memory_bytes, l.processes), (1 << 30, 64));
        let asked = LimitRequest { memory_bytes: Some(100 << 20), ..none };
        assert_eq!(s.resolve("run", &asked, &floor).expect("asked").memory_bytes, 100 << 20);
        let big = LimitRequest { wall_ms: Some(30_001), ..none };
        assert_eq!(
            s.resolve("run", &big, &none).expect_err("too large").to_string(),
            "run wall_ms cannot exceed the configured limit of 30000"
        );
        let zero = LimitRequest { cpu_ms: Some(0), ..none };
        assert_eq!(s.resolve("run", &zero, &none), Err(LimitError::Zero { stage: "run", field: "cpu_ms" }));
    }
}
