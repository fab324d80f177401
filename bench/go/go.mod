module tetherbench

go 1.19

require golang.org/x/sync v0.1.0

// Debian's golang-golang-x-sync-dev installs the module's source here;
// nothing is downloaded (run.sh sets GOPROXY=off).
replace golang.org/x/sync => /usr/share/gocode/src/golang.org/x/sync
