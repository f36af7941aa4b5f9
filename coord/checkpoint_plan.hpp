// How often to checkpoint, and what a run then costs, in the model the DVDC
// paper uses (after J. T. Daly, "A higher order estimate of the optimum
// checkpoint interval for restart dumps", FGCS 22, 2006): failures come as a
// Poisson process with mean time between them M; each failure costs a
// restart R and rolls the job back to its last checkpoint; a checkpoint
// costs δ of the job's time. Pure functions: `vvmm plan` and, later, the
// cluster's own epoch timer use them.
#pragma once

#include "vmm/base/duration_parse.hpp"

namespace vvmm::coord {

struct FailureModel {
    Seconds mtbf;                 // M
    Seconds epoch_cost;           // δ
    Seconds restart_cost{0};      // R
};

// Daly's higher-order optimum interval of work between checkpoints:
// τ = √(2δM)·[1 + ⅓·√(δ/2M) + (1/9)·(δ/2M)] − δ while δ < 2M, else τ = M.
Seconds daly_interval(Seconds epoch_cost, Seconds mtbf);

// Expected wall time to finish `work` (failure-free solve time) checkpointing
// every `interval` of work: M·e^(R/M)·(e^((τ+δ)/M) − 1)·work/τ.
Seconds expected_completion(Seconds work, Seconds interval, const FailureModel& model);

// The same without checkpoints (every failure starts the run again):
// M·e^(R/M)·(e^(work/M) − 1). Infinite when it overflows a double.
Seconds expected_completion_without_checkpoints(Seconds work, const FailureModel& model);

}  // namespace vvmm::coord
