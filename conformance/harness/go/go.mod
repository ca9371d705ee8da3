module mutual/limbo-go

go 1.19
