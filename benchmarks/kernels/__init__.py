"""2:4 kernel benchmarks of wandapp.sparse24: cuSPARSELt and CUTLASS against cuBLAS, Nsight Compute tables, vLLM.

Run each as `python -m benchmarks.kernels.X`.
"""
