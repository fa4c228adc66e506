module linkd/benchmarks/wanproxy

go 1.22
