"""The medians stage: the monthly-median recipe and the sharded, memory-mappable medians store (writer and reader)."""
