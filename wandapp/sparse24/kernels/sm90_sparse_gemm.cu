// 2:4 sparse fp16 GEMMs for Hopper (sm_90a) from CUTLASS 3's sparse warp-specialized collectives.
//
// y (tokens, out) = x (tokens, in) @ W^T, posed to CUTLASS as D (M=out, N=tokens) = A (M, K) @ B (K, N), with A
// the 2:4 weight (row-major, K contiguous), B = x^T (column-major: x as it comes) and D column-major: y as torch
// wants it, so no transpose runs on either side. C is void (beta = 0, nothing read).
//
// Exposed through a C ABI for ctypes (wandapp/sparse24/cutlass_sparse.py): size queries, the compressor (CUTLASS's
// own, on the GPU) and one GEMM entry point per config. A config's K tile fixes the compressed layout (its
// "family"): a weight is compressed once per family, whatever config of it wins.
//
// Built by wandapp.sparse24.cutlass_sparse.build_library with nvcc -gencode arch=compute_90a,code=sm_90a. One
// config per translation unit (-DWANDAPP_CONFIG=i) keeps the build parallel; -DWANDAPP_COMMON builds the rest.

#include <cstdint>
#include <cuda_runtime.h>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/transform/device/transform_universal_adapter.hpp"
#include "cutlass/transform/kernel/sparse_gemm_compressor.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;

namespace wandapp_sm90 {

using Element = cutlass::half_t;
using Accumulator = float;
using LayoutA = cutlass::layout::RowMajor;     // W (out, in)
using LayoutB = cutlass::layout::ColumnMajor;  // x (tokens, in) read as B (in, tokens)
using LayoutD = cutlass::layout::ColumnMajor;  // y (tokens, out) written as D (out, tokens)
constexpr int kAlign = 8;                      // 16 bytes of fp16
using ProblemShape = Shape<int, int, int, int>;

// CUTLASS's sparse mainloop with one k tile's wgmma kept in flight, as CUTLASS's dense sm90 mainloop does.
//
// CUTLASS 4.2's sparse mainloop (collective/sm90_sparse_mma_tma_gmma_ss_warpspecialized.hpp, BSD-3-Clause) loads
// a k tile's metadata into one set of registers, so it waits for each tile's wgmma to finish before it loads the
// next tile's (K_PIPE_MMAS = 0): each consumer warpgroup leaves the tensor pipe a gap between k tiles (release,
// barrier, metadata load), which the other warpgroup fills only when their tiles do not end together. Here the
// metadata alternates between two register buffers, so the next tile's wgmma is issued while the last one runs.
// The metadata partitioning helpers are CUTLASS's private ones, restated.
template <class Base>
struct PipelinedSparseMma : Base {
  using typename Base::MainloopPipeline;
  using typename Base::PipelineState;
  using typename Base::TensorStorage;
  using typename Base::Params;
  using typename Base::TiledMma;
  using typename Base::SmemLayoutA;
  using typename Base::SmemLayoutB;
  using typename Base::SmemLayoutE;
  using typename Base::SmemCopyAtomE;
  using typename Base::ElementEMma;

  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState smem_pipe_read, FrgTensorC& accum, int k_tile_count,
                          int thread_idx, TensorStorage& shared_tensors, Params const&) {
    Tensor sA = make_tensor(make_smem_ptr(shared_tensors.smem_A.begin()), SmemLayoutA{});  // (BLK_M,BLK_K,PIPE)
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.smem_B.begin()), SmemLayoutB{});  // (BLK_N,BLK_K,PIPE)
    Tensor sE = as_position_independent_swizzle_tensor(
        make_tensor(make_smem_ptr(shared_tensors.smem_E.begin()), SmemLayoutE{}));        // (BLK_M,BLK_K,PIPE)

    constexpr int kWarpGroups = size(TiledMma{}) / cutlass::NumThreadsPerWarpGroup;
    Layout warp_group_thread_layout = make_layout(Int<kWarpGroups>{}, Int<cutlass::NumThreadsPerWarpGroup>{});
    int warp_group = __shfl_sync(0xFFFFFFFF, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    TiledMma tiled_mma;
    auto thread_mma = tiled_mma.get_thread_slice(warp_group_thread_layout(warp_group));
    Tensor tCrA = thread_mma.make_fragment_A(thread_mma.partition_A(sA));  // (MMA,MMA_M,MMA_K,PIPE) descriptors
    Tensor tCrB = thread_mma.make_fragment_B(thread_mma.partition_B(sB));  // (MMA,MMA_N,MMA_K,PIPE) descriptors

    auto tiled_copy_E = make_tiled_copy_E(Copy_Atom<SmemCopyAtomE, uint32_t>{}, tiled_mma);
    auto copy_E = tiled_copy_E.get_thread_slice(thread_idx);
    Tensor tEsE = copy_E.partition_S(sE);                                         // (ECPY,ECPY_M,ECPY_K,PIPE)
    Tensor tCrE0 = make_fragment_like<ElementEMma>(partition_E(thread_mma, sE(_, _, Int<0>{})));
    Tensor tCrE1 = make_fragment_like<ElementEMma>(tCrE0);
    Tensor tErE0 = copy_E.retile_D(tCrE0);
    Tensor tErE1 = copy_E.retile_D(tCrE1);

    PipelineState smem_pipe_release = smem_pipe_read;
    tiled_mma.accumulate_ = GMMA::ScaleOut::Zero;
    warpgroup_fence_operand(accum);
    // One k tile into metadata buffer tErE: that buffer's last wgmma (two tiles back) has finished by now.
    auto issue = [&](auto& tErE) {
      auto barrier_token = pipeline.consumer_try_wait(smem_pipe_read);
      pipeline.consumer_wait(smem_pipe_read, barrier_token);
      int read_stage = smem_pipe_read.index();
      copy(tiled_copy_E, tEsE(_, _, _, read_stage), tErE);
      warpgroup_fence_operand(accum);
      warpgroup_arrive();
      CUTLASS_PRAGMA_UNROLL
      for (int k_block = 0; k_block < size<2>(tCrA); ++k_block) {
        cute::gemm(tiled_mma, make_zip_tensor(tCrA(_, _, k_block, read_stage), tErE(_, _, k_block)),
                   tCrB(_, _, k_block, read_stage), accum);
        tiled_mma.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
      ++smem_pipe_read;
    };
    // Wait for the previous tile's wgmma (the newest stays in flight) and hand its stage back to the producer.
    auto retire = [&]() {
      warpgroup_wait<1>();
      warpgroup_fence_operand(accum);
      pipeline.consumer_release(smem_pipe_release);
      ++smem_pipe_release;
    };
    if (k_tile_count > 0) {
      issue(tErE0);
      --k_tile_count;
    }
    CUTLASS_PRAGMA_NO_UNROLL
    for (; k_tile_count > 1; k_tile_count -= 2) {
      issue(tErE1);
      retire();
      issue(tErE0);
      retire();
    }
    if (k_tile_count > 0) {
      issue(tErE1);
      retire();
    }
    warpgroup_fence_operand(accum);
  }

  // mma released every stage but the last tile's, whose wgmma may still run.
  CUTLASS_DEVICE void mma_tail(MainloopPipeline pipeline, PipelineState smem_pipe_release, int k_tile_count) {
    if (k_tile_count <= 0) return;
    smem_pipe_release.advance(k_tile_count - 1);
    warpgroup_wait<0>();
    pipeline.consumer_release(smem_pipe_release);
  }

 private:
  // (thread, value) partitioning of the metadata, as CUTLASS's sparse mainloop computes it.
  template <class MmaAtom, class AtomLayoutMNK, class PermutationMNK, class ETensor>
  CUTE_HOST_DEVICE static constexpr auto thrfrg_E(TiledMMA<MmaAtom, AtomLayoutMNK, PermutationMNK> const& mma,
                                                  ETensor&& etensor) {
    using Mma = TiledMMA<MmaAtom, AtomLayoutMNK, PermutationMNK>;
    auto t_tensor = logical_divide(etensor, make_tile(get<0>(PermutationMNK{}), get<2>(PermutationMNK{})));
    auto e_tensor = zipped_divide(t_tensor, make_tile(make_layout(size<0>(typename Mma::AtomShape_MNK{})),
                                                      make_layout(size<2>(typename Mma::AtomShape_MNK{}))));
    auto tv_tensor = e_tensor.compose(typename Mma::Atom::Traits::ELayout{}, _);  // ((ThrV,FrgV),(RestM,RestK))
    auto thr_tile = make_tile(_, make_tile(make_layout(size<1>(mma.thr_layout_vmnk_)),
                                           make_layout(size<3>(mma.thr_layout_vmnk_))));
    return zipped_divide(tv_tensor, thr_tile);  // ((ThrV,(ThrM,ThrK)),(FrgV,(RestM,RestK)))
  }

  template <class Mma>
  CUTE_HOST_DEVICE static constexpr auto layout_E_TV(Mma const& mma) {
    auto ref_E = make_layout(make_shape(tile_size<0>(mma), tile_size<2>(mma)));
    auto layout_TV = thrfrg_E(mma, ref_E);
    auto etile = make_tile(_, make_tile(make_layout(make_shape(size<1>(mma.thr_layout_vmnk_),
                                                               size<2>(mma.thr_layout_vmnk_)),
                                                    make_stride(Int<1>{}, Int<0>{})),
                                        _));
    return layout_TV.compose(etile, _).compose(right_inverse(mma.thr_layout_vmnk_), _);
  }

  template <class ThrMma, class ETensor>
  CUTE_HOST_DEVICE static constexpr auto partition_E(ThrMma const& thr_mma, ETensor&& etensor) {
    auto thr_tensor = make_tensor(static_cast<ETensor&&>(etensor).data(), thrfrg_E(thr_mma, etensor.layout()));
    auto thr_vmk =
        make_coord(get<0>(thr_mma.thr_vmnk_), make_coord(get<1>(thr_mma.thr_vmnk_), get<3>(thr_mma.thr_vmnk_)));
    return thr_tensor(thr_vmk, make_coord(_, repeat<rank<1, 1>(thr_tensor)>(_)));
  }

  template <class CopyAtom, class Mma>
  CUTE_HOST_DEVICE static constexpr auto make_tiled_copy_E(CopyAtom const& copy_atom, Mma const& mma) {
    return make_tiled_copy_impl(copy_atom, layout_E_TV(mma), make_shape(tile_size<0>(mma), tile_size<2>(mma)));
  }
};

template <class Tile, class Cluster, class MainSchedule, class EpiSchedule, bool PipelineMetadata = false>
struct Config {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, Accumulator, Accumulator,
      void, LayoutD, kAlign, Element, LayoutD, kAlign, EpiSchedule>::CollectiveOp;
  using CutlassMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, Element, LayoutA, kAlign, Element, LayoutB, kAlign,
      Accumulator, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainSchedule>::CollectiveOp;
  using Mainloop = std::conditional_t<PipelineMetadata, PipelinedSparseMma<CutlassMainloop>, CutlassMainloop>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

using namespace cutlass::gemm;
using Kernel_coop = KernelTmaWarpSpecializedCooperative;
using Kernel_ping = KernelTmaWarpSpecializedPingpong;
using Epi_coop = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Epi_ping = cutlass::epilogue::TmaWarpSpecialized;
// The cooperative configs with a K tile of 64 run PipelinedSparseMma: on the H100 it cut their SM cycles by up to
// 26% where they were not held by DRAM, and did not help the K-128 tiles (ncu; docs/speed.md).
constexpr bool Pipelined_coop = true, Pipelined_ping = false;

// The configs, in index order: X(index, tile M, N, K, cluster M, N, schedule). M is the weight's rows, N the
// tokens. This one list defines each config's type, its name ("256x128x128_c1x2_coop") and its family: the K
// tile fixes the compressed layout, family 0 for K 128, family 1 for K 64 (more pipeline stages). Config 12
// multicasts the weight tile to the two CTAs of its cluster: about 2-4% faster than config 2 (ncu, H100); config
// 13 is cuSPARSELt's tile and cluster.
#define WANDAPP_SM90_CONFIGS(X)   \
  X(0, 128, 128, 128, 1, 2, coop) \
  X(1, 128, 256, 128, 1, 1, coop) \
  X(2, 256, 128, 128, 1, 1, coop) \
  X(3, 256, 128, 128, 2, 1, coop) \
  X(4, 128, 128, 128, 1, 1, ping) \
  X(5, 64, 128, 128, 1, 2, ping)  \
  X(6, 64, 256, 128, 1, 1, ping)  \
  X(7, 128, 128, 128, 2, 1, coop) \
  X(8, 256, 128, 64, 1, 1, coop)  \
  X(9, 128, 256, 64, 1, 1, coop)  \
  X(10, 256, 128, 64, 2, 1, coop) \
  X(11, 128, 128, 64, 1, 1, ping) \
  X(12, 256, 128, 128, 1, 2, coop) \
  X(13, 128, 256, 64, 2, 1, coop)

#define WANDAPP_CONFIG_TYPE(I, TM, TN, TK, CM, CN, S)                                                 \
  using Config##I = Config<Shape<Int<TM>, Int<TN>, Int<TK>>, Shape<Int<CM>, Int<CN>, _1>, Kernel_##S, Epi_##S, \
                           Pipelined_##S && TK == 64>;
WANDAPP_SM90_CONFIGS(WANDAPP_CONFIG_TYPE)

constexpr int family_of_k_tile(int k_tile) { return k_tile == 128 ? 0 : 1; }
#define WANDAPP_CONFIG_ONE(I, TM, TN, TK, CM, CN, S) +1
#define WANDAPP_CONFIG_FAMILY(I, TM, TN, TK, CM, CN, S) family_of_k_tile(TK),
#define WANDAPP_CONFIG_NAME(I, TM, TN, TK, CM, CN, S) #TM "x" #TN "x" #TK "_c" #CM "x" #CN "_" #S,
constexpr int kConfigs = 0 WANDAPP_SM90_CONFIGS(WANDAPP_CONFIG_ONE);
constexpr int kFamilyOf[kConfigs] = {WANDAPP_SM90_CONFIGS(WANDAPP_CONFIG_FAMILY)};
#define WANDAPP_CHECK_K_TILE(I, TM, TN, TK, CM, CN, S) static_assert(TK == 128 || TK == 64, "K tile 128 or 64");
WANDAPP_SM90_CONFIGS(WANDAPP_CHECK_K_TILE)

// The compressed layout of each family, and CUTLASS's GPU compressor for it.
// A config of each family stands for it (its mainloop type only; no kernel of it is built).
template <int Family>
using FamilyConfig = Config<Shape<_128, _128, Int<Family == 0 ? 128 : 64>>, Shape<_1, _1, _1>, Kernel_coop, Epi_coop>;
template <int Family>
using SparseConfigOf = typename FamilyConfig<Family>::Mainloop::SparseConfig;
using StrideA = cutlass::gemm::TagToStrideA_t<LayoutA>;
template <int Family>
using Compressor = cutlass::transform::device::TransformUniversalAdapter<
    cutlass::transform::kernel::StructuredSparseCompressor<ProblemShape, Element, LayoutA, SparseConfigOf<Family>,
                                                          cutlass::arch::Sm90>>;
template <int Family>
using CompressorUtility =
    cutlass::transform::kernel::StructuredSparseCompressorUtility<ProblemShape, Element, LayoutA,
                                                                  SparseConfigOf<Family>>;

inline int sm_count() {
  int device = 0;
  cudaGetDevice(&device);
  return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
}

template <int Family>
CompressorUtility<Family> utility_for(int m, int k) {
  ProblemShape shape{m, 1, k, 1};
  return CompressorUtility<Family>(shape, cutlass::make_cute_packed_stride(StrideA{}, make_shape(m, k, 1)));
}

template <int Family>
typename Compressor<Family>::Arguments compress_arguments(const void* weight, void* values, void* meta, int m,
                                                           int k) {
  using ElementE = typename FamilyConfig<Family>::Mainloop::ElementE;
  typename Compressor<Family>::Arguments args{
      ProblemShape{m, 1, k, 1},
      {static_cast<const Element*>(weight), cutlass::make_cute_packed_stride(StrideA{}, make_shape(m, k, 1)),
       static_cast<Element*>(values), static_cast<ElementE*>(meta)},
      {}};
  args.hw_info.sm_count = weight ? sm_count() : 0;
  return args;
}

template <int Family>
int compress(const void* weight, void* values, void* meta, int m, int k, void* ws, size_t ws_bytes,
             cudaStream_t stream) {
  auto args = compress_arguments<Family>(weight, values, meta, m, k);
  Compressor<Family> op;
  if (op.can_implement(args) != cutlass::Status::kSuccess) return 1;
  if (Compressor<Family>::get_workspace_size(args) > ws_bytes) return 1;
  if (op.initialize(args, ws, stream) != cutlass::Status::kSuccess) return 2;
  return op.run(stream) == cutlass::Status::kSuccess ? 0 : 3;
}

template <class C>
typename C::Gemm::Arguments arguments(const void* values, const void* meta, const void* x, void* y, int m, int n,
                                      int k, int swizzle, int raster) {
  using Gemm = typename C::Gemm;
  using SparseConfig = typename C::Mainloop::SparseConfig;
  ProblemShape shape{m, n, k, 1};
  auto stride_b = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideB{}, make_shape(n, k, 1));
  auto stride_d = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideD{}, make_shape(m, n, 1));
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      shape,
      {static_cast<const Element*>(values), SparseConfig::fill_layoutA(shape), static_cast<const Element*>(x),
       stride_b, static_cast<const typename C::Mainloop::ElementE*>(meta), SparseConfig::fill_layoutE(shape)},
      {{Accumulator(1), Accumulator(0)}, nullptr, stride_d, static_cast<Element*>(y), stride_d}};
  args.hw_info.sm_count = sm_count();
  args.scheduler.max_swizzle_size = swizzle;
  using Raster = cutlass::gemm::kernel::detail::RasterOrderOptions;
  args.scheduler.raster_order = raster == 1 ? Raster::AlongM : raster == 2 ? Raster::AlongN : Raster::Heuristic;
  return args;
}

// 0 on success; 1: the problem is not supported by the config; 2: initialize failed; 3: launch failed.
template <class C>
int gemm(const void* values, const void* meta, const void* x, void* y, int m, int n, int k, void* workspace,
         size_t workspace_bytes, int swizzle, int raster, cudaStream_t stream) {
  using Gemm = typename C::Gemm;
  auto args = arguments<C>(values, meta, x, y, m, n, k, swizzle, raster);
  Gemm op;
  if (op.can_implement(args) != cutlass::Status::kSuccess) return 1;
  if (Gemm::get_workspace_size(args) > workspace_bytes) return 1;
  if (op.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return 2;
  return op.run(stream) == cutlass::Status::kSuccess ? 0 : 3;
}

template <class C>
size_t workspace(int m, int n, int k) {
  return C::Gemm::get_workspace_size(arguments<C>(nullptr, nullptr, nullptr, nullptr, m, n, k, 1, 0));
}

}  // namespace wandapp_sm90

#define WANDAPP_ENTRY(I)                                                                                     \
  extern "C" int wandapp_sm90_sparse_gemm_##I(const void* values, const void* meta, const void* x, void* y,  \
                                              int m, int n, int k, void* ws, size_t ws_bytes, int swizzle,   \
                                              int raster, void* stream) {                                   \
    return wandapp_sm90::gemm<wandapp_sm90::Config##I>(values, meta, x, y, m, n, k, ws, ws_bytes, swizzle,   \
                                                       raster, static_cast<cudaStream_t>(stream));           \
  }                                                                                                          \
  extern "C" size_t wandapp_sm90_sparse_workspace_##I(int m, int n, int k) {                                 \
    return wandapp_sm90::workspace<wandapp_sm90::Config##I>(m, n, k);                                        \
  }

#if defined(WANDAPP_CONFIG)
#define WANDAPP_EXPAND(I) WANDAPP_ENTRY(I)
WANDAPP_EXPAND(WANDAPP_CONFIG)
#endif

#if defined(WANDAPP_COMMON)
// Each config's K tile must give its family's compressed layout, or a weight compressed once per family breaks.
#define WANDAPP_CHECK_FAMILY(I, TM, TN, TK, CM, CN, S)                                                         \
  static_assert(std::is_same_v<wandapp_sm90::Config##I::Mainloop::SparseConfig,                             \
                               wandapp_sm90::SparseConfigOf<wandapp_sm90::kFamilyOf[I]>>,                   \
                "config " #I ": its K tile does not match its family's compressed layout");
WANDAPP_SM90_CONFIGS(WANDAPP_CHECK_FAMILY)

extern "C" int wandapp_sm90_sparse_configs() { return wandapp_sm90::kConfigs; }

extern "C" int wandapp_sm90_sparse_config_family(int i) {
  return i >= 0 && i < wandapp_sm90::kConfigs ? wandapp_sm90::kFamilyOf[i] : -1;
}

extern "C" const char* wandapp_sm90_sparse_config_name(int i) {
  static const char* names[wandapp_sm90::kConfigs] = {WANDAPP_SM90_CONFIGS(WANDAPP_CONFIG_NAME)};
  return i >= 0 && i < wandapp_sm90::kConfigs ? names[i] : nullptr;
}

// Bytes of the compressed values and of the metadata for a (m, k) 2:4 weight in a family's layout.
extern "C" void wandapp_sm90_sparse_sizes(int m, int k, int family, uint64_t* value_bytes, uint64_t* meta_bytes) {
  auto sizes = [&](auto utility) {
    *value_bytes = utility.get_compressed_tensor_A_bytes();
    *meta_bytes = utility.get_tensor_E_bytes();
  };
  family == 0 ? sizes(wandapp_sm90::utility_for<0>(m, k)) : sizes(wandapp_sm90::utility_for<1>(m, k));
}

// Compress a row-major (m, k) fp16 2:4 weight on the GPU into a family's layout. 0 on success.
extern "C" int wandapp_sm90_sparse_compress(const void* weight, void* values, void* meta, int m, int k, int family,
                                            void* ws, size_t ws_bytes, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return family == 0 ? wandapp_sm90::compress<0>(weight, values, meta, m, k, ws, ws_bytes, s)
                     : wandapp_sm90::compress<1>(weight, values, meta, m, k, ws, ws_bytes, s);
}

extern "C" size_t wandapp_sm90_sparse_compress_workspace(int m, int k, int family) {
  using namespace wandapp_sm90;
  return family == 0 ? Compressor<0>::get_workspace_size(compress_arguments<0>(nullptr, nullptr, nullptr, m, k))
                     : Compressor<1>::get_workspace_size(compress_arguments<1>(nullptr, nullptr, nullptr, m, k));
}
#endif
