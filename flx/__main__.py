from flx.cli import main

main()
