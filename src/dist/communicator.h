// The collectives a data-parallel trainer needs, over buffers on the model's device. The GPU implementation is
// NCCL (backend/cuda/nccl.{h,cpp}: libnccl loaded at run time, its own CUDA stream); tests use an in-process
// one over host memory. Ranges and counts are in elements.
//
// Ordering (GPU): a collective starts after the work already issued on the compute stream and runs on the
// communicator's stream, so the compute stream can go on (the backward pass of earlier layers) while it runs;
// wait() makes the compute stream wait for every collective issued so far. Host-side results (sum_host) are
// complete on return.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "dist/process-group.h"
#include "dist/shard.h"

namespace gsa::dist {

class communicator {
 public:
  virtual ~communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string describe() const = 0;  // "NCCL 2.27.3, rank 1 of 2 on cuda:1"

  // buf (n f32) = its sum over the ranks, on every rank.
  virtual void all_reduce_sum(float* buf, int64_t n) = 0;
  // Rank r's buf[ranges[r]] = the sum over the ranks of that range (ranges cover what is reduced, one per rank,
  // any sizes); the rest of buf is left undefined.
  virtual void reduce_scatter_sum(float* buf, std::span<const range> ranges) = 0;
  // buf[ranges[r]] on every rank = rank r's buf[ranges[r]]; elements of elem_bytes bytes.
  virtual void all_gather(void* buf, size_t elem_bytes, std::span<const range> ranges) = 0;
  // recv (bytes) on every rank = root's send (send is read on the root only; send == recv is allowed).
  virtual void broadcast(const void* send, void* recv, size_t bytes, int root) = 0;
  // The compute stream waits for every collective issued so far.
  virtual void wait() = 0;
  // The sum of x over the ranks (blocking: loss and gradient norm).
  virtual double sum_host(double x) = 0;
};

// The communicator of a group started by `gsa train --gpus N` or torchrun: selects GPU local_rank, runs the
// rendezvous (dist/rendezvous.h) and creates the NCCL communicator. Throws gsa::error with what to change when
// this build has no CUDA or when NCCL cannot be loaded (GSA_NCCL_LIBRARY names libnccl.so.2).
std::unique_ptr<communicator> make_gpu_communicator(const process_group& g);
// Whether this build has the NCCL communicator (a CUDA build); when false, the error make_gpu_communicator gives.
bool gpu_communicator_built(std::string* why = nullptr);

}  // namespace gsa::dist
