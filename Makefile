# README command 1 and 2; both work on a fresh Debian machine (see ./dev).
.PHONY: demo test lint docs
demo:
	./dev demo
test:
	./dev test
lint:
	./dev lint
docs:
	./dev docs
