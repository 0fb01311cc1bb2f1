module tre.local/gate

go 1.26.0
