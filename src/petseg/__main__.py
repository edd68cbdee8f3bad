from petseg.cli.main import main

raise SystemExit(main())
